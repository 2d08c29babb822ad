@garage-postgres
Feature: Exports started at a provider
  A job may name no files and instead start an export at a provider: ferry
  POSTs to the start URL, polls the status URL with growing waits until the
  provider answers ready with a manifest, then downloads the manifest's
  files like any other job. Provider failures, timeouts and bad manifests
  fail the job with a clear reason and nothing stored.

  Background:
    Given a job service

  Scenario: An export becomes ready and its files are downloaded
    Given an export provider that is ready after 2 polls with 3 good files
    When I submit an export job into "exported" polling every 10 ms up to 40 ms for at most 10000 ms
    And the job runs to the end
    Then the job is "completed"
    And every file of the job succeeded and is stored under "exported"
    And the job went through exporting, export ready with 3 files, and completion
    And the provider was asked to start the export once, keyed by the job id, with the job's request

  Scenario: A manifest at its own URL is fetched
    Given an export provider whose manifest of 2 good files is at its own URL
    When I submit an export job into "by-url" polling every 10 ms up to 10 ms for at most 10000 ms
    And the job runs to the end
    Then the job is "completed"
    And the manifest was read from its own URL
    And every file of the job succeeded and is stored under "by-url"

  Scenario: Polls wait longer and longer, up to the maximum interval
    Given an export provider that is ready after 5 polls with 1 good files
    When I submit an export job into "backoff" polling every 20 ms up to 60 ms for at most 10000 ms
    And the job runs to the end
    Then the job is "completed"
    And the waits between polls were at least 40, 60 and 60 ms

  Scenario: The provider fails the export
    Given an export provider that fails the export with "dataset d-42 does not exist"
    When I submit an export job into "failed" polling every 10 ms up to 10 ms for at most 10000 ms
    And the job runs to the end
    Then the job failed because "the provider reported that the export failed: dataset d-42 does not exist"
    And nothing is stored under "failed"

  Scenario: An export that is never ready times out
    Given an export provider that is never ready
    When I submit an export job into "timeout" polling every 20 ms up to 100 ms for at most 500 ms
    And the job runs to the end
    Then the job failed because "the export was not ready within its deadline of 500 ms"
    And the provider was polled at most 10 times
    And nothing is stored under "timeout"

  Scenario: The provider refuses to start the export
    Given an export provider that refuses to start it with HTTP 404
    When I submit an export job into "refused" polling every 10 ms up to 10 ms for at most 10000 ms
    And the job runs to the end
    Then the job failed because "refused the request (HTTP 404): no such dataset"
    And the provider was asked to start the export 1 times, always with the same key

  Scenario: A provider that is briefly unavailable is retried
    Given an export provider that is unavailable for 2 start requests and 2 polls, then ready with 2 good files
    When I submit an export job into "flaky" polling every 10 ms up to 20 ms for at most 10000 ms
    And the job runs to the end
    Then the job is "completed"
    And the provider was asked to start the export 3 times, always with the same key
    And every file of the job succeeded and is stored under "flaky"

  Scenario: A manifest with a bad key fails the job, naming the entry
    Given an export provider whose manifest of 2 good files gives file 1 the key "../outside"
    When I submit an export job into "bad-manifest" polling every 10 ms up to 10 ms for at most 10000 ms
    And the job runs to the end
    Then the job failed because "manifest.files[1].key"
    And nothing is stored under "bad-manifest"

  Scenario: A restart while exporting polls the same export instead of starting another
    Given an export provider that is ready after 1000 polls with 2 good files
    When I submit an export job into "restart" polling every 10 ms up to 10 ms for at most 60000 ms
    And the job's run is dropped while the export is pending
    And the provider then becomes ready
    And a new process resumes unfinished jobs and the job ends
    Then the job is "completed"
    And the provider was asked to start the export once, keyed by the job id, with the job's request
    And every file of the job succeeded and is stored under "restart"
