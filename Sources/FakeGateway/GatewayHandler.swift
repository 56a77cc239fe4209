import ChatBatchCore
import Foundation
import NIOCore
import NIOHTTP1

/// One connection's HTTP handler: routes, checks, decides, and answers (possibly late, streamed, or never).
final class GatewayHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    /// A request that holds an in-flight slot and has not finished: closed connections settle it.
    struct Open {
        var key: String
        var entry: LedgerEntry
        var scheduled: Scheduled<Void>?
    }

    let core: GatewayCore
    var head: HTTPRequestHead?
    var body: ByteBuffer?
    var receivedAt = 0.0
    var open: Open?
    /// The key's `x-ratelimit-*` headers for the request being answered (set once it was admitted or refused).
    var rateHeaders: [(String, String)] = []

    init(core: GatewayCore) { self.core = core }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            head = h
            body = nil
            receivedAt = GatewayState.now()
        case .body(var chunk):
            if body == nil { body = chunk } else { body!.writeBuffer(&chunk) }
        case .end:
            guard let h = head else { return }
            head = nil
            handle(context: context, head: h, body: body.map { Array($0.readableBytesView) } ?? [])
        }
    }

    func channelInactive(context: ChannelHandlerContext) {
        // The client went away (or we reset it): whatever was open is settled as billed, since the request was read.
        if var o = open {
            o.scheduled?.cancel()
            if o.entry.outcome == "ok" { o.entry.outcome = "cancelled" }
            o.entry.respondedAt = GatewayState.now()
            let entry = o.entry
            core.ledger.record { seq in
                var e = entry
                e.sequence = seq
                return e
            }
            core.state.release(key: o.key)
            open = nil
        }
        context.fireChannelInactive()
    }

    // MARK: routing and checks

    func handle(context: ChannelHandlerContext, head: HTTPRequestHead, body: [UInt8]) {
        let requestID = core.state.nextRequestID()
        let clientID = head.headers.first(name: "x-client-request-id")
        rateHeaders = []
        var entry = LedgerEntry(
            sequence: 0, receivedAt: receivedAt, respondedAt: 0, method: head.method.rawValue, path: head.uri,
            route: "unknown", status: 0, outcome: "error", clientRequestID: clientID, requestID: requestID,
            billed: false, promptTokens: 0, completionTokens: 0, stream: false)
        let keepAlive = head.isKeepAlive

        // The ledger entry is written before the answer leaves, so a client that has its answer finds it there.
        func fail(_ answer: GatewayErrorAnswer, retryAfter: String? = nil) {
            entry.status = answer.status
            entry.respondedAt = GatewayState.now()
            let e = entry
            core.ledger.record { seq in
                var x = e
                x.sequence = seq
                return x
            }
            sendJSON(
                context: context, status: answer.status, body: answer.body, requestID: requestID,
                keepAlive: keepAlive, retryAfter: retryAfter)
        }

        let (path, query) = splitURI(head.uri)
        let config = core.state.config
        if path == "/fake/stats" && head.method == .GET {
            // For harnesses: what is in flight now, and how many requests arrived; not recorded in the ledger.
            let stats: JSON = ["in_flight": .int(core.state.inflight), "ledger_entries": .int(core.ledger.count)]
            sendJSON(context: context, status: 200, body: stats, requestID: requestID, keepAlive: keepAlive)
            return
        }
        if path == "/v1/models" {
            entry.route = "models"
            guard head.method == .GET else { return fail(.notFound) }
            guard authorizedKey(head) != nil else { return fail(.unauthorized) }
            let data = JSON.array(config.models.map { ["id": .string($0), "object": "model", "owned_by": "openai"] })
            entry.status = 200
            entry.outcome = "ok"
            entry.respondedAt = GatewayState.now()
            let e = entry
            core.ledger.record { seq in
                var x = e
                x.sequence = seq
                return x
            }
            sendJSON(
                context: context, status: 200, body: ["object": "list", "data": data], requestID: requestID,
                keepAlive: keepAlive)
            return
        }
        if path == "/v1/chat/completions" {
            entry.route = "tera"
        } else if ["/v1/embeddings", "/v1/completions", "/v1/responses"].contains(path) {
            entry.route = String(path.dropFirst(4))
        } else if let projectInPath = tirProject(path) {
            entry.route = "tir"
            let projectInQuery = query["project_id"]
            guard let projectInQuery, projectInQuery == projectInPath else {
                return fail(.invalid("The project_id query parameter must be given and match the project in the path."))
            }
            guard projectInPath == config.projectID else {
                return fail(.forbidden("This key has no access to project \(projectInPath)."))
            }
        } else {
            return fail(.notFound)
        }
        guard head.method == .POST else { return fail(.notFound) }
        guard let key = authorizedKey(head) else {
            let presented =
                head.headers.first(name: "authorization").map { String($0.dropFirst("Bearer ".count)) } ?? ""
            return fail(config.echoKeyInErrors ? .unauthorized(echoing: presented) : .unauthorized)
        }
        let request: JSON
        do {
            request = try JSON.parse(body)
        } catch {
            return fail(.invalid("Malformed JSON body: \(error)."))
        }
        guard request.objectValue != nil else { return fail(.invalid("The request body must be a JSON object.")) }
        guard let model = request["model"]?.stringValue else { return fail(.invalid("'model' is required.")) }
        guard config.models.contains(model) else {
            return fail(config.unknownModelAs400 ? .invalidModelName(model) : .modelNotFound(model))
        }
        if config.unscopedKeys.contains(key) {
            return fail(.forbidden("This key is not scoped to the model '\(model)'. Request scope for it."))
        }
        /// The key's limits and the dice decide; refused, the answer is sent here and nil returned. Admitted, the
        /// request was read and a generation started, so it is billed whatever follows.
        func admit(prompt: Int, completion: Int) -> Admission? {
            let admission = core.state.admit(
                key: key, clientID: clientID, estimatedTokens: prompt + completion, at: receivedAt)
            rateHeaders = core.state.rateLimitHeaders(key: key, at: receivedAt)
            if case .fail(let status, let retryAfter) = admission {
                fail(GatewayErrorAnswer.forStatus(status), retryAfter: retryAfter)
                return nil
            }
            entry.billed = true
            entry.promptTokens = prompt
            entry.completionTokens = completion
            return admission
        }
        if entry.route != "tera" && entry.route != "tir" {
            let plain: PlainAnswer
            let prepared =
                switch entry.route {
                case "embeddings": plainEmbeddings(request, model: model)
                case "completions": plainCompletions(request, model: model, requestID: requestID)
                default: plainResponses(request, model: model, requestID: requestID)
                }
            switch prepared {
            case .failure(let invalid): return fail(invalid)
            case .success(let prepared): plain = prepared
            }
            entry.stream = plain.events != nil
            guard let admission = admit(prompt: plain.promptTokens, completion: plain.completionTokens) else { return }
            return answer(
                plain, context: context, admission: admission, entry: entry, key: key, requestID: requestID,
                keepAlive: keepAlive)
        }
        if let invalid = RequestValidation.check(request, maxOutputTokens: config.maxOutputTokens) {
            return fail(invalid)
        }

        var answer = AnswerGenerator.generate(body: request, answerTokens: config.answerTokens)
        let stream = request["stream"]?.boolValue == true
        entry.stream = stream
        guard let admission = admit(prompt: answer.promptTokens, completion: answer.completionTokens) else { return }
        switch admission {
        case .fail:
            return
        case .reset, .stall:
            leaveUnanswered(admission, entry: entry, key: key, context: context)
        case .answer(let corrupt):
            if corrupt == .badJSON { answer.content = String((answer.content ?? "{}").prefix(9)) }
            if corrupt == .mismatch { answer.content = "{}" }
            let includeUsage =
                !config.omitUsage && corrupt != .noUsage
                && request["stream_options"]?["include_usage"]?.boolValue == true
            entry.outcome = "ok"
            entry.status = 200
            open = Open(key: key, entry: entry, scheduled: nil)
            let shapes = ResponseShapes(
                id: "chatcmpl-" + requestID, model: model, created: Int(receivedAt),
                reasoningField: config.reasoningField)
            let delay = core.state.latencyNanoseconds(completionTokens: answer.completionTokens)
            let respond = { [self] in
                if let corrupt,
                    let raw = FaultyAnswer.make(
                        corrupt, shapes: shapes, answer: answer, stream: stream, includeUsage: includeUsage,
                        omitUsage: config.omitUsage)
                {
                    finishOpen()
                    sendRaw(
                        context: context, status: raw.status, contentType: raw.contentType, extra: raw.headers,
                        body: raw.body,
                        requestID: requestID, keepAlive: keepAlive)
                } else if stream {
                    startStream(
                        context: context, events: shapes.chunks(answer, includeUsage: includeUsage),
                        requestID: requestID, keepAlive: keepAlive)
                } else {
                    finishOpen()
                    var body = shapes.completion(answer)
                    if config.omitUsage || corrupt == .noUsage { body["usage"] = nil }
                    sendJSON(context: context, status: 200, body: body, requestID: requestID, keepAlive: keepAlive)
                }
            }
            answerAfter(delay, context: context, respond)
        }
    }

    /// Records the open request as answered and frees its slot.
    func finishOpen() {
        guard var o = open else { return }
        open = nil
        o.entry.respondedAt = GatewayState.now()
        let entry = o.entry
        core.ledger.record { seq in
            var e = entry
            e.sequence = seq
            return e
        }
        core.state.release(key: o.key)
    }

    func authorizedKey(_ head: HTTPRequestHead) -> String? {
        let config = core.state.config
        let auth = head.headers.first(name: "authorization")
        // limits are per key given
        if config.anyKey { return auth.map { String($0.dropFirst("Bearer ".count)) } ?? "" }
        guard let auth, auth.hasPrefix("Bearer ") else { return nil }
        let key = String(auth.dropFirst("Bearer ".count)).trimmingCharacters(in: .whitespaces)
        return config.apiKeys.contains(key) || config.unscopedKeys.contains(key) ? key : nil
    }

    /// The project id of a `/project/p-{id}/genai/gpt_oss_120b/v1/chat/completions` path.
    func tirProject(_ path: String) -> String? {
        let parts = path.split(separator: "/", omittingEmptySubsequences: true)
        guard parts.count == 7, parts[0] == "project", parts[1].hasPrefix("p-"), parts[2] == "genai",
            parts[3] == "gpt_oss_120b", parts[4] == "v1", parts[5] == "chat", parts[6] == "completions"
        else { return nil }
        return String(parts[1].dropFirst(2))
    }

    func splitURI(_ uri: String) -> (String, [String: String]) {
        guard let q = uri.firstIndex(of: "?") else { return (uri, [:]) }
        var query: [String: String] = [:]
        for pair in uri[uri.index(after: q)...].split(separator: "&") {
            let kv = pair.split(separator: "=", maxSplits: 1)
            query[String(kv[0])] = kv.count > 1 ? String(kv[1]) : ""
        }
        return (String(uri[..<q]), query)
    }

    // MARK: writing

    func headers(requestID: String, contentType: String, keepAlive: Bool) -> HTTPHeaders {
        var h = HTTPHeaders()
        h.add(name: "content-type", value: contentType)
        h.add(name: "x-tera-request-id", value: requestID)
        if !keepAlive { h.add(name: "connection", value: "close") }
        for (name, value) in rateHeaders { h.add(name: name, value: value) }
        return h
    }

    func sendJSON(
        context: ChannelHandlerContext, status: Int, body: JSON, requestID: String, keepAlive: Bool,
        retryAfter: String? = nil
    ) {
        var bytes = [UInt8]()
        body.write(to: &bytes)
        sendRaw(
            context: context, status: status, contentType: "application/json",
            extra: retryAfter.map { [("retry-after", $0)] } ?? [],
            body: bytes, requestID: requestID, keepAlive: keepAlive)
    }

    func sendRaw(
        context: ChannelHandlerContext, status: Int, contentType: String, extra: [(String, String)],
        body bytes: [UInt8], requestID: String, keepAlive: Bool
    ) {
        var h = headers(requestID: requestID, contentType: contentType, keepAlive: keepAlive)
        h.add(name: "content-length", value: String(bytes.count))
        for (name, value) in extra { h.add(name: name, value: value) }
        let head = HTTPResponseHead(version: .http1_1, status: HTTPResponseStatus(statusCode: status), headers: h)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        context.write(wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: bytes)))), promise: nil)
        let done = context.writeAndFlushPromise(wrapOutboundOut(.end(nil)))
        if !keepAlive { done.whenComplete { [channel = context.channel] _ in channel.close(promise: nil) } }
    }

    func startStream(context: ChannelHandlerContext, events: [String], requestID: String, keepAlive: Bool) {
        let head = HTTPResponseHead(
            version: .http1_1, status: .ok,
            headers: headers(requestID: requestID, contentType: "text/event-stream", keepAlive: keepAlive))
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        let gap = Int64(core.state.config.streamChunkDelayMilliseconds * 1_000_000)
        var index = 0
        func next() {
            guard open != nil, context.channel.isActive else { return }
            while index < events.count {
                let event = "data: " + events[index] + "\n\n"
                index += 1
                context.write(
                    wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(string: event)))), promise: nil)
                if gap > 0 && index < events.count {
                    context.flush()
                    open?.scheduled = context.eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(gap)) { next() }
                    return
                }
            }
            finishOpen()
            let done = context.writeAndFlushPromise(wrapOutboundOut(.end(nil)))
            if !keepAlive { done.whenComplete { [channel = context.channel] _ in channel.close(promise: nil) } }
        }
        next()
    }
}

extension ChannelHandlerContext {
    func writeAndFlushPromise(_ data: NIOAny) -> EventLoopFuture<Void> {
        let promise = eventLoop.makePromise(of: Void.self)
        writeAndFlush(data, promise: promise)
        return promise.futureResult
    }
}
