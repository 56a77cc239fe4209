import ChatBatchCore

/// `GET /metrics`: the server in Prometheus' text format (no key asked, as Prometheus scrapes; the server listens
/// on loopback unless told otherwise). Batches by status, files held, and lines and tokens of every batch (a running
/// batch's from its checkpoint).
extension BatchService {
    func metrics() -> ServiceResponse {
        let (files, batches) = state.withLock { (s: inout State) in (s.files.count, Array(s.batches.values)) }
        var byStatus: [String: Int] = [:]
        var completed = 0
        var failed = 0
        var input = 0
        var output = 0
        for b in batches {
            byStatus[b.status.rawValue, default: 0] += 1
            let c = counts(b)
            completed += c.done
            failed += c.failed
            input += c.promptTokens
            output += c.completionTokens
        }
        var text = """
            # HELP chatbatch_serve_batches Batches the server holds, by status.
            # TYPE chatbatch_serve_batches gauge

            """
        let statuses: [BatchStatus] = [
            .validating, .failed, .inProgress, .finalizing, .completed, .expired, .cancelling, .cancelled
        ]
        for s in statuses { text += "chatbatch_serve_batches{status=\"\(s.rawValue)\"} \(byStatus[s.rawValue] ?? 0)\n" }
        text += """
            # HELP chatbatch_serve_files Files the server holds (uploads, outputs and errors).
            # TYPE chatbatch_serve_files gauge
            chatbatch_serve_files \(files)
            # HELP chatbatch_serve_lines Request lines of every batch, by outcome so far.
            # TYPE chatbatch_serve_lines gauge
            chatbatch_serve_lines{outcome="completed"} \(completed)
            chatbatch_serve_lines{outcome="failed"} \(failed)
            # HELP chatbatch_serve_tokens Tokens of every batch as the provider reported them, by kind.
            # TYPE chatbatch_serve_tokens gauge
            chatbatch_serve_tokens{kind="input"} \(input)
            chatbatch_serve_tokens{kind="output"} \(output)

            """
        return ServiceResponse(
            status: 200, body: Array(text.utf8), contentType: "text/plain; version=0.0.4; charset=utf-8")
    }
}
