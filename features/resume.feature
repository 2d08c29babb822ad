Feature: Resume an interrupted copy from its checkpoint
  A platform engineer's copy of a large file breaks three quarters of the
  way through. Run again, ferry continues from its last checkpoint instead
  of starting over, and never stores a mix of two versions of the source.
  What a copy staged is kept only while it can still be resumed.

  Background:
    Given an origin serving "large.bin" of 12 MiB that resets once after 9 MiB

  Scenario: A broken copy resumes where its checkpoint left it
    When I copy "large.bin" to "out/large.bin" with checkpoints
    Then the copy fails with "length_mismatch"
    And a checkpoint of the copy is saved
    And nothing is visible at "out/large.bin"
    When I copy "large.bin" to "out/large.bin" with checkpoints
    Then the copy succeeds
    And it resumed from the checkpoint, fetching at most 8 MiB again
    And "out/large.bin" holds exactly the bytes of "large.bin"
    And no temporary file remains
    And no checkpoint remains

  Scenario: A source that changed is copied again from zero
    When I copy "large.bin" to "out/large.bin" with checkpoints
    Then the copy fails with "length_mismatch"
    Given "large.bin" changes at the origin
    When I copy "large.bin" to "out/large.bin" with checkpoints
    Then the copy succeeds
    And it restarted from zero because "the source changed"
    And "out/large.bin" holds exactly the bytes of "large.bin"
    And no temporary file remains
    And no checkpoint remains

  Scenario: Giving a copy up discards what it staged
    When I copy "large.bin" to "out/large.bin" with checkpoints
    Then the copy fails with "length_mismatch"
    When I give the copy up
    Then no temporary file remains
    And no checkpoint remains
    And nothing is visible at "out/large.bin"
