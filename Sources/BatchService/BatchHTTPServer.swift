import ChatBatchCore
import Dispatch
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix

/// The HTTP side of `chatbatch serve`: SwiftNIO, as the fake gateway uses (no second HTTP stack in the package).
/// Each request is read whole (up to the file limit plus the multipart framing: a larger one gets a 413 before its
/// body is read), handed to `BatchService` off the event loop, and answered with its status and body.
public final class BatchHTTPServer: Sendable {
    public let port: Int
    let group: MultiThreadedEventLoopGroup
    let channel: any Channel

    public init(service: BatchService, host: String, port: Int) throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
        self.group = group
        let limit = service.settings.maxFileBytes + (1 << 20)
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 256)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(ServiceHandler(service: service, limit: limit))
                }
            }
        do {
            channel = try bootstrap.bind(host: host, port: port).wait()
        } catch {
            try? group.syncShutdownGracefully()
            throw error
        }
        self.port = channel.localAddress?.port ?? port
    }

    /// Stops listening and closes every connection.
    public func shutdown() {
        try? channel.close().wait()
        try? group.syncShutdownGracefully()
    }
}

/// One connection: collects a request, asks the service, writes the answer.
final class ServiceHandler: ChannelInboundHandler {
    typealias InboundIn = HTTPServerRequestPart
    typealias OutboundOut = HTTPServerResponsePart

    let service: BatchService
    let limit: Int
    /// The request being read (its head parsed; the body added at its end), and whether its connection stays open.
    private var pending: (request: ServiceRequest, keepAlive: Bool)?
    private var body: ByteBuffer?
    /// An upload's body goes to this file as it arrives (memory does not grow with the file's size).
    private var spool: (path: String, handle: FileHandle, bytes: Int)?
    /// The request was answered early (too large): its remaining parts are dropped.
    private var refused = false
    /// The most a request's body may hold: an upload's `limit`, any other `requestLimit`.
    private var bodyLimit = 0
    /// The most a request other than an upload may send (a batch's create is a few hundred bytes).
    static let requestLimit = 1 << 20

    init(service: BatchService, limit: Int) {
        self.service = service
        self.limit = limit
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        switch unwrapInboundIn(data) {
        case .head(let h):
            body = nil
            refused = false
            dropSpool()
            let asked = Self.request(h, body: [])
            pending = (asked, h.isKeepAlive)
            let upload = h.method == .POST && asked.path.split(separator: "/") == ["v1", "files"]
            bodyLimit = upload ? limit : Self.requestLimit
            if let length = h.headers.first(name: "content-length").flatMap(Int.init), length > bodyLimit {
                refuse(context)
                return
            }
            // The key is checked before any body is taken: no one without it fills the memory or the disk.
            if asked.path != "/metrics" && !service.authorized(asked) {
                refused = true
                write(context, .json(APIError.unauthorized.json, status: 401), keepAlive: false, linger: true)
                return
            }
            if upload {
                let path = service.folder.uploadPath(BatchFolder.newID("spool-"))
                if FileManager.default.createFile(atPath: path, contents: nil),
                    let handle = FileHandle(forWritingAtPath: path)
                {
                    spool = (path, handle, 0)
                }
            }
            if h.headers.first(name: "expect")?.lowercased() == "100-continue" {
                // curl asks before sending a large body, and waits a second for this when no answer comes.
                let proceed = HTTPResponseHead(version: h.version, status: .continue)
                context.writeAndFlush(wrapOutboundOut(.head(proceed)), promise: nil)
            }
        case .body(var chunk):
            guard !refused else { return }
            if var s = spool {
                s.bytes += chunk.readableBytes
                spool = s
                guard s.bytes <= limit else {
                    dropSpool()
                    return refuse(context)
                }
                try? s.handle.write(contentsOf: Data(chunk.readableBytesView))
                return
            }
            if body == nil { body = chunk } else { body!.writeBuffer(&chunk) }
            if (body?.readableBytes ?? 0) > bodyLimit { refuse(context) }
        case .end:
            // A refused request's body is in: the connection may close now without losing the answer to a reset.
            if refused { return context.close(promise: nil) }
            guard let (request, keepAlive) = pending else { return }
            var asked = request
            pending = nil
            asked.body = body.map { Array($0.readableBytesView) } ?? []
            body = nil
            if let s = spool {
                try? s.handle.close()
                asked.spool = s.path
                spool = nil
            }
            let loop = context.eventLoop
            let bound = NIOLoopBound((self, context), eventLoop: loop)
            let service = service
            DispatchQueue.global().async { [asked] in
                let response = service.handle(asked)
                if let spooled = asked.spool { try? FileManager.default.removeItem(atPath: spooled) }
                loop.execute {
                    let (handler, context) = bound.value
                    handler.write(context, response, keepAlive: keepAlive)
                }
            }
        }
    }

    /// Closes and removes an upload's spool file (a refused or abandoned upload).
    private func dropSpool() {
        guard let s = spool else { return }
        try? s.handle.close()
        try? FileManager.default.removeItem(atPath: s.path)
        spool = nil
    }

    func channelInactive(context: ChannelHandlerContext) {
        dropSpool()
        context.fireChannelInactive()
    }

    private func refuse(_ context: ChannelHandlerContext) {
        refused = true
        let error =
            bodyLimit == limit
            ? APIError(
                413, "The request is larger than the \(service.settings.maxFileBytes)-byte file limit.",
                code: "file_too_large")
            : APIError(413, "The request body is larger than \(Self.requestLimit) bytes.", code: "request_too_large")
        write(context, .json(error.json, status: 413), keepAlive: false, linger: true)
    }

    /// Writes `response`; without `keepAlive` the connection closes once it is written. With `linger` (a request
    /// refused before its body was read) only the sending side closes then: the body the client is still sending is
    /// read and dropped until it ends (or ten seconds pass), since closing with unread bytes resets the connection
    /// and the client can lose the answer (curl saw a 413 as a failed transfer that way).
    func write(_ context: ChannelHandlerContext, _ response: ServiceResponse, keepAlive: Bool, linger: Bool = false) {
        var h = HTTPHeaders()
        h.add(name: "content-type", value: response.contentType)
        // A file goes from disk as a file region (sendfile): an output of gigabytes takes no memory.
        let handle = response.file.flatMap { try? NIOFileHandle(_deprecatedPath: $0.path) }
        let length = handle != nil ? response.file?.size ?? 0 : response.body.count
        h.add(name: "content-length", value: String(length))
        if !keepAlive { h.add(name: "connection", value: "close") }
        let status =
            response.file != nil && handle == nil ? HTTPResponseStatus.notFound : .init(statusCode: response.status)
        let head = HTTPResponseHead(version: .http1_1, status: status, headers: h)
        context.write(wrapOutboundOut(.head(head)), promise: nil)
        if let handle {
            let region = FileRegion(fileHandle: handle, readerIndex: 0, endIndex: length)
            context.write(wrapOutboundOut(.body(.fileRegion(region))), promise: nil)
        } else {
            context.write(
                wrapOutboundOut(.body(.byteBuffer(context.channel.allocator.buffer(bytes: response.body)))),
                promise: nil)
        }
        let done = context.eventLoop.makePromise(of: Void.self)
        context.writeAndFlush(wrapOutboundOut(.end(nil)), promise: done)
        done.futureResult.whenComplete { [channel = context.channel] _ in
            try? handle?.close()
            if linger {
                channel.close(mode: .output, promise: nil)
                channel.eventLoop.scheduleTask(in: .seconds(10)) { channel.close(promise: nil) }
            } else if !keepAlive {
                channel.close(promise: nil)
            }
        }
    }

    static func request(_ h: HTTPRequestHead, body: [UInt8]) -> ServiceRequest {
        let uri = h.uri
        let q = uri.firstIndex(of: "?")
        let path = String(q.map { uri[..<$0] } ?? uri[...])
        var query: [String: String] = [:]
        if let q {
            for pair in uri[uri.index(after: q)...].split(separator: "&") {
                let kv = pair.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
                guard let name = kv.first, !name.isEmpty else { continue }
                query[String(name)] = kv.count > 1 ? String(kv[1]).removingPercentEncoding ?? String(kv[1]) : ""
            }
        }
        var headers: [String: String] = [:]
        for (name, value) in h.headers { headers[name.lowercased()] = value }
        return ServiceRequest(method: h.method.rawValue, path: path, query: query, headers: headers, body: body)
    }
}
