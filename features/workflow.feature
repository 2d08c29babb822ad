@garage-postgres
Feature: Step Functions callbacks
  A job submitted by an AWS Step Functions state machine carries a task
  token. When the job ends, ferry answers it through the real aws-sdk-sfn
  client: SendTaskSuccess with the job's summary, or SendTaskFailure with an
  error code and a cause. A callback that cannot be delivered is recorded on
  the job and never changes the job's own result.

  Background:
    Given a job service
    And a Step Functions endpoint that records calls

  Scenario: A job that completes with errors sends SendTaskSuccess with its summary
    Given the origin serves 3 good files
    And file 1 of the job expects a wrong SHA-256
    And the job carries the task token "tok-success"
    When I submit a job for those files into "sfn-ok"
    And the job runs to the end
    Then the job is "completed_with_errors"
    And Step Functions received SendTaskSuccess for "tok-success" with status "completed_with_errors", 2 succeeded and 1 failed
    And the job records the callback as "sent task_success"

  Scenario: A failed job sends SendTaskFailure
    Given the origin serves 1 good files
    And every file of the job expects a wrong SHA-256
    And the job carries the task token "tok-failure"
    When I submit a job for those files into "sfn-failed"
    And the job runs to the end
    Then the job is "failed"
    And Step Functions received SendTaskFailure for "tok-failure" with error "ferry.JobFailed" and a cause mentioning "all 1 file(s) failed"
    And the job records the callback as "sent task_failure"

  Scenario: A failed export sends SendTaskFailure with the provider's reason
    Given an export provider that fails the export with "quota exceeded"
    And the job carries the task token "tok-export"
    When I submit an export job into "sfn-export" polling every 10 ms up to 10 ms for at most 10000 ms
    And the job runs to the end
    Then Step Functions received SendTaskFailure for "tok-export" with error "ferry.JobFailed" and a cause mentioning "quota exceeded"

  Scenario: A cancelled job sends SendTaskFailure
    Given the origin serves a file that stalls mid-body
    And the job carries the task token "tok-cancel"
    When I submit a job for those files into "sfn-cancel"
    And the job starts running in the background
    And I cancel the job once its file is transferring
    Then the job is "cancelled"
    And Step Functions received SendTaskFailure for "tok-cancel" with error "ferry.JobCancelled" and a cause mentioning "cancelled"

  Scenario: A job without a task token sends nothing
    Given the origin serves 1 good files
    When I submit a job for those files into "sfn-none"
    And the job runs to the end
    Then the job is "completed"
    And Step Functions received no call

  Scenario: An unreachable Step Functions endpoint never loses the job's result
    Given a Step Functions endpoint that fails every call
    And the origin serves 1 good files
    And the job carries the task token "tok-lost"
    When I submit a job for those files into "sfn-lost"
    And the job runs to the end
    Then the job is "completed"
    And the job records that the callback failed, after retries
