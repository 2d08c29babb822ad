@garage-postgres
Feature: Export jobs
  A platform team submits a batch of files as a job. ferry stores the job
  durably, runs its files with bounded concurrency and retries, records a
  result per file, and publishes an ordered history of events.

  Every scenario here runs on SQLite + a directory, then on PostgreSQL + Garage.

  Background:
    Given a job service

  Scenario: A job whose files are all good completes
    Given the origin serves 3 good files
    When I submit a job for those files into "batch"
    And the job runs to the end
    Then the job is "completed"
    And every file of the job succeeded and is stored under "batch"

  Scenario: One wrong checksum completes the job with errors
    Given the origin serves 5 good files
    And file 2 of the job expects a wrong SHA-256
    When I submit a job for those files into "batch"
    And the job runs to the end
    Then the job is "completed_with_errors"
    And file 2 failed with "checksum_mismatch" after 1 attempt
    And the other files succeeded

  Scenario: A job whose every file fails is failed
    Given the origin serves 2 good files
    And every file of the job expects a wrong SHA-256
    When I submit a job for those files into "batch"
    And the job runs to the end
    Then the job is "failed"

  Scenario: A transient failure is retried and the file succeeds
    Given the origin serves a file that is cut short on its first request
    When I submit a job for those files into "retry"
    And the job runs to the end
    Then the job is "completed"
    And file 0 succeeded after 2 attempts
    And an event announced that file 0 will be retried

  Scenario: An invalid job is rejected, naming the field, and nothing is stored
    Given the origin serves 2 good files
    And file 1 of the job has the key "../escape"
    When I submit a job for those files into "batch"
    Then the job is rejected on field "files[1].key"
    And no job is stored

  Scenario: Two files with the same key are rejected
    Given the origin serves 2 good files
    And file 1 of the job has the key "same.bin"
    And file 0 of the job has the key "same.bin"
    When I submit a job for those files into "batch"
    Then the job is rejected on field "files[1].key"

  Scenario: Cancelling a job mid-transfer stops it and leaves nothing
    Given the origin serves a file that stalls mid-body
    When I submit a job for those files into "cancel"
    And the job starts running in the background
    And I cancel the job once its file is transferring
    Then the job is "cancelled"
    And nothing is stored under "cancel"
    And cancelling the job again is refused

  Scenario: A restart resumes an unfinished job left in the store
    Given the origin serves 2 good files
    When I submit a job for those files into "restart"
    And the store holds the job as a process that died while file 0 was running left it
    And a new process resumes unfinished jobs
    Then the job is "completed"
    And file 0 succeeded after 2 attempts
    And every file of the job succeeded and is stored under "restart"

  Scenario: Events are stored and published in sequence order
    Given the origin serves 4 good files
    When I submit a job for those files into "events"
    And the job runs to the end
    Then the first event is "job_created" and the last is "job_completed"
    And the event sequence numbers are 1, 2, 3... without gaps
    And the stored events replay exactly what was published

  Scenario: Per-job concurrency bounds how many files run at once
    Given a job service running 2 files of a job at a time
    And the origin serves 6 good files
    When I submit a job for those files into "bounded"
    And the job runs to the end
    Then at most 2 files of the job were running at any moment
    And the job is "completed"

  Scenario: A global limit bounds files running at once across jobs
    Given a job service running at most 2 files at once across all jobs
    And the origin serves 4 good files
    When I submit 3 jobs of those files into "global" and run them together
    Then at most 2 files were running at any moment across the jobs
    And every one of those jobs is "completed"
