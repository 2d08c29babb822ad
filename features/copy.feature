Feature: Copy one file in a single verified streaming pass
  A platform engineer copies a file from a URL into a directory. ferry
  computes SHA-256 (and MD5 when asked) while the bytes flow, checks size and
  checksum before the file becomes visible, and leaves nothing behind when a
  check fails.

  Background:
    Given an origin serving "big.bin" of 3 MiB

  Scenario: Successful copy with a checksum
    Given the expected SHA-256 of "big.bin"
    When I copy "big.bin" to "exports/big.bin"
    Then the copy succeeds
    And "exports/big.bin" holds exactly the bytes of "big.bin"
    And the reported SHA-256 is that of "big.bin"
    And no temporary file remains

  Scenario: Successful copy computing MD5 as well
    Given the expected MD5 of "big.bin"
    When I copy "big.bin" to "big.bin"
    Then the copy succeeds
    And the reported MD5 is that of "big.bin"

  Scenario: Checksum mismatch leaves nothing
    Given a wrong expected SHA-256
    When I copy "big.bin" to "exports/big.bin"
    Then the copy fails with "checksum_mismatch"
    And nothing is visible at "exports/big.bin"
    And no temporary file remains

  Scenario: Size limit exceeded by the declared length
    Given a size limit of 1 MiB
    When I copy "big.bin" to "big.bin"
    Then the copy fails with "size_limit_exceeded"
    And nothing is visible at "big.bin"
    And the origin sent no body bytes for "big.bin" beyond the headers

  Scenario: Size limit exceeded by counting a body without a length
    Given an origin serving "stream.bin" of 2 MiB without a length
    And a size limit of 1 MiB
    When I copy "stream.bin" to "stream.bin"
    Then the copy fails with "size_limit_exceeded"
    And nothing is visible at "stream.bin"
    And no temporary file remains

  Scenario: A connection reset mid-body is resumed from where it broke
    Given an origin serving "flaky.bin" of 2 MiB that resets once after 500 KiB
    And the expected SHA-256 of "flaky.bin"
    When I copy "flaky.bin" to "flaky.bin"
    Then the copy succeeds
    And "flaky.bin" holds exactly the bytes of "flaky.bin"
    And the origin received a range request for "flaky.bin"
