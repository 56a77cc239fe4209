import ChatBatchCore
import Dispatch
import Foundation
import NIOCore
import NIOHTTP1
import NIOPosix
import Synchronization

/// What every connection handler shares: the state and the ledger.
final class GatewayCore: Sendable {
    let state: GatewayState
    let ledger: Ledger
    init(config: FakeGatewayConfiguration) throws(FakeGatewayError) {
        state = GatewayState(config: config)
        ledger = try Ledger(path: config.ledgerPath, inMemory: config.ledgerInMemory)
    }
}

/// A local HTTP server that answers like the Tera gateway and E2E TIR, failures included.
///
/// Start it, point a client at `baseURL`, and read `ledger` afterwards to see what was received and billed.
public final class FakeGateway: Sendable {
    public let configuration: FakeGatewayConfiguration
    /// The port it listens on (the real one when 0 was asked for).
    public let port: Int
    /// What it received, answered and billed.
    public var ledger: Ledger { core.ledger }

    let core: GatewayCore
    let group: MultiThreadedEventLoopGroup
    let channel: any Channel
    /// Set once it has stopped: stopping again does nothing (an event loop that is shut down takes no more work).
    private let stopped = Mutex(false)

    /// True the first time only.
    private func stopOnce() -> Bool {
        stopped.withLock { s in
            defer { s = true }
            return !s
        }
    }

    /// Binds and starts serving; returns once the port is open.
    public init(_ configuration: FakeGatewayConfiguration) throws(FakeGatewayError) {
        self.configuration = configuration
        let core = try GatewayCore(config: configuration)
        self.core = core
        let group = MultiThreadedEventLoopGroup(numberOfThreads: max(1, configuration.threads))
        self.group = group
        let bootstrap = ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 1024)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // TCP_NODELAY lives at the TCP level: `.socketOption(.tcp_nodelay)` would set option 1 at the socket level,
            // which is SO_DEBUG, refused (EACCES) to every user but root, closing each connection it accepts.
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    try channel.pipeline.syncOperations.configureHTTPServerPipeline(withErrorHandling: true)
                    try channel.pipeline.syncOperations.addHandler(GatewayHandler(core: core))
                }
            }
        do {
            channel = try bootstrap.bind(host: configuration.host, port: configuration.port).wait()
        } catch {
            try? group.syncShutdownGracefully()
            throw FakeGatewayError(
                code: "bind_failed", message: "cannot listen on \(configuration.host):\(configuration.port): \(error)")
        }
        port = channel.localAddress?.port ?? configuration.port
    }

    /// Starts a gateway with the default configuration changed by `change`.
    public static func start(_ change: (inout FakeGatewayConfiguration) -> Void = { _ in }) throws(FakeGatewayError)
        -> FakeGateway
    {
        var c = FakeGatewayConfiguration()
        change(&c)
        return try FakeGateway(c)
    }

    /// `http://127.0.0.1:PORT`, the root both routes hang from.
    public var rootURL: String { "http://\(configuration.host):\(port)" }
    /// The Tera-shaped base URL, `http://127.0.0.1:PORT/v1`.
    public var baseURL: String { rootURL + "/v1" }
    /// The full TIR-shaped endpoint for this gateway's project.
    public var tirEndpoint: String {
        let id = configuration.projectID
        return rootURL + "/project/p-\(id)/genai/gpt_oss_120b/v1/chat/completions?project_id=\(id)"
    }

    /// Requests received and not answered yet.
    public var inFlight: Int { core.state.inflight }

    /// Stops listening and closes every connection.
    public func shutdown() {
        guard stopOnce() else { return }
        try? channel.close().wait()
        try? group.syncShutdownGracefully()
    }

    /// Stops gracefully: closes the listener, gives requests in flight up to `grace` seconds to be answered,
    /// then drops the rest (they are recorded as billed, since they were read), and flushes the ledger file.
    public func stop(grace: Double) {
        guard stopOnce() else { return }
        try? channel.close().wait()
        let deadline = DispatchTime.now() + grace
        while core.state.inflight > 0 && DispatchTime.now() < deadline { usleep(5_000) }
        try? group.syncShutdownGracefully()
        core.ledger.flush()
    }
}
