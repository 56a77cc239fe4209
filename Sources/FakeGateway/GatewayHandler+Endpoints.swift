import ChatBatchCore
import NIOCore

/// An answer of an endpoint besides chat, ready to send: its body, its SSE events when streamed, its usage.
struct PlainAnswer {
    var body: JSON
    var events: [String]?
    var promptTokens: Int
    var completionTokens: Int
}

extension GatewayHandler {
    /// A `/v1/embeddings` request's answer, or why it is refused.
    func plainEmbeddings(_ request: JSON, model: String) -> Result<PlainAnswer, GatewayErrorAnswer> {
        EmbeddingsAnswer.inputs(request).map { inputs in
            PlainAnswer(
                body: EmbeddingsAnswer.body(inputs, request: request, model: model), events: nil,
                promptTokens: EmbeddingsAnswer.tokens(inputs), completionTokens: 0)
        }
    }

    /// A `/v1/completions` request's answer (streamed when it asks), or why it is refused.
    func plainCompletions(_ request: JSON, model: String, requestID: String) -> Result<PlainAnswer, GatewayErrorAnswer>
    {
        let config = core.state.config
        return CompletionsAnswer.prompt(request).map { prompt in
            let generated = CompletionsAnswer.generate(
                prompt: prompt, request: request, answerTokens: config.answerTokens)
            let shape = CompletionsAnswer(id: "cmpl-" + requestID, model: model, created: Int(receivedAt))
            let stream = request["stream"]?.boolValue == true
            let includeUsage = !config.omitUsage && request["stream_options"]?["include_usage"]?.boolValue == true
            return PlainAnswer(
                body: shape.body(generated), events: stream ? shape.chunks(generated, includeUsage: includeUsage) : nil,
                promptTokens: generated.promptTokens, completionTokens: generated.completionTokens)
        }
    }

    /// A `/v1/responses` request's answer (streamed as typed events when it asks), or why it is refused.
    func plainResponses(_ request: JSON, model: String, requestID: String) -> Result<PlainAnswer, GatewayErrorAnswer> {
        let config = core.state.config
        return ResponsesAnswer.chatBody(request).map { chat in
            let generated = AnswerGenerator.generate(body: chat, answerTokens: config.answerTokens)
            let shape = ResponsesAnswer(id: requestID, model: model, created: Int(receivedAt))
            return PlainAnswer(
                body: shape.body(generated),
                events: request["stream"]?.boolValue == true ? shape.events(generated) : nil,
                promptTokens: generated.promptTokens, completionTokens: generated.completionTokens)
        }
    }

    /// Answers an admitted request of an endpoint besides chat after the gateway's latency, or with the fault its
    /// admission drew: a reset or a stall as for chat, an answer without usage, or any other corrupt answer cut short
    /// (not JSON).
    func answer(
        _ plain: PlainAnswer, context: ChannelHandlerContext, admission: Admission, entry: LedgerEntry, key: String,
        requestID: String, keepAlive: Bool
    ) {
        var entry = entry
        switch admission {
        case .fail:
            return
        case .reset, .stall:
            leaveUnanswered(admission, entry: entry, key: key, context: context)
        case .answer(let corrupt):
            entry.outcome = "ok"
            entry.status = 200
            open = Open(key: key, entry: entry, scheduled: nil)
            let omitUsage = core.state.config.omitUsage || corrupt == .noUsage
            let respond = { [self] in
                if let events = plain.events, corrupt == nil || corrupt == .noUsage {
                    // Without usage: the usage chunk (the only event with a `usage` key) is left out.
                    let sent = omitUsage ? events.filter { !$0.contains("\"usage\":") } : events
                    startStream(context: context, events: sent, requestID: requestID, keepAlive: keepAlive)
                    return
                }
                finishOpen()
                var body = plain.body
                if omitUsage { body["usage"] = nil }
                if corrupt == nil || corrupt == .noUsage {
                    sendJSON(context: context, status: 200, body: body, requestID: requestID, keepAlive: keepAlive)
                } else {
                    var bytes = [UInt8]()
                    body.write(to: &bytes)
                    sendRaw(
                        context: context, status: 200, contentType: "application/json", extra: [],
                        body: Array(bytes.prefix(40)), requestID: requestID, keepAlive: keepAlive)
                }
            }
            let delay = core.state.latencyNanoseconds(completionTokens: plain.completionTokens)
            answerAfter(delay, context: context, respond)
        }
    }

    /// An admitted request that gets no answer: the connection reset at once, or held until the client gives up.
    func leaveUnanswered(_ admission: Admission, entry: LedgerEntry, key: String, context: ChannelHandlerContext) {
        var entry = entry
        entry.outcome = admission == .reset ? "reset" : "stall"
        open = Open(key: key, entry: entry, scheduled: nil)
        if admission == .reset { context.close(promise: nil) }  // a stall waits for the client to give up
    }

    /// Runs `respond` after `delay` nanoseconds (the gateway's latency), at once when there is none; a connection
    /// that closes first cancels it.
    func answerAfter(_ delay: Int64, context: ChannelHandlerContext, _ respond: @escaping () -> Void) {
        guard delay > 0 else { return respond() }
        open?.scheduled = context.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(delay)) { respond() }
    }
}
