Feature: Job and file task invariants
  The job and file task state machines refuse illegal transitions with an
  error and keep their counts consistent.

  Scenario: A job completes only when every file task is finished
    Given a downloading job of 3 files
    When file 0 succeeds with 100 bytes
    Then completing the job is refused because 2 file tasks are not finished
    And the summary counts 3 files, 1 succeeded, 0 failed, 2 unfinished and 100 bytes

  Scenario: A completed job is final
    Given a downloading job of 2 files
    When file 0 succeeds with 10 bytes
    And file 1 fails
    And the job completes
    Then the job entity is "completed_with_errors"
    And the summary counts 2 files, 1 succeeded, 1 failed, 0 unfinished and 10 bytes
    And every further transition of the job or its tasks is refused

  Scenario: A finished file task is final
    Given a downloading job of 2 files
    When file 0 succeeds with 5 bytes
    Then a finished file task cannot be started, failed or re-queued again

  Scenario: Cancelling keeps finished results and cancels the rest
    Given a downloading job of 3 files
    When file 0 succeeds with 7 bytes
    And the job is cancelled
    Then its unfinished file tasks are cancelled and the finished ones keep their result
    And every further transition of the job or its tasks is refused

  Scenario: Only a job without files starts an export, and only its manifest moves it on
    Then an export cannot start for a job that lists its files
