import ChatBatchCore
import Testing

@testable import ChatBatch

/// The job keys are one table (`JobKey.all`): what a job file reads, what a flag overrides, what a provider may set.
@Suite("Job keys, described once")
struct JobKeyTests {
    @Test func everySettingIsTakenOnceWhenFlagsOverrideAJob() {
        // A setting added to JobSettings and to neither the key table nor the flag-only list fails here.
        #expect(JobSettings.fields.count == Mirror(reflecting: JobSettings()).children.count)
        #expect(Set(JobKey.all.map(\.name)).count == JobKey.all.count, "a key is in the table twice")
    }

    @Test func aJobIsReadByTheTableAndFlagsWinOverIt() throws {
        let fields = try JSON.parse(
            #"{"input": "in.jsonl", "concurrency": 12, "retry": {"max_attempts": 3, "base_delay": 0.5},"#
                + #" "providers": [{"name": "a", "provider": "tera", "max_cost": 2}], "cache_mode": "read-only"}"#
        ).objectValue!
        let job = try JobFile.settings(from: fields, relativeTo: "/jobs", source: "job.yaml", date: "2026-12-02")
        #expect(job.input == "/jobs/in.jsonl" && job.concurrency == 12 && job.maxAttempts == 3)
        #expect(job.retryBaseDelay == 0.5 && job.cacheMode == .readOnly)
        #expect(job.providers?.first?.name == "a" && job.providers?.first?.maxCost == 2)
        var flags = JobSettings()
        flags.concurrency = 4
        flags.force = true
        let both = job.overridden(by: flags)
        #expect(both.concurrency == 4 && both.force == true && both.maxAttempts == 3 && both.input == job.input)
        let error = #expect(throws: ChatBatchError.self) {
            try JobFile.settings(
                from: try JSON.parse(#"{"providers": [{"name": "a", "strict": true}]}"#).objectValue!,
                relativeTo: ".", source: "job.yaml", date: "d")
        }
        #expect(error?.message.contains("unknown setting `strict`") == true, "\(error?.message ?? "")")
    }
}
