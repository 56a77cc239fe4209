import ChatBatchCore
import FakeGateway
import Foundation
import TestSupport
import Testing

@testable import ChatBatch

/// A free TCP port on loopback (bound, released), chosen below the kernel's ephemeral range (32768 and up on
/// Linux). A server the tests stop and start again on its port (a gateway, PostgreSQL, serve) must find it free:
/// a port from the ephemeral range could meanwhile be given to a server another suite bound to port 0, or to a
/// client's own end of a connection, and held for the rest of that test.
func freeLoopbackPort() -> Int {
    for _ in 0..<200 {
        let port = Int.random(in: 20_000..<32_000)
        if canBind(port) { return port }
    }
    return 0
}

/// True when a TCP socket can be bound to the loopback port now.
private func canBind(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    return withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    } == 0
}

/// A gateway that a test stops and starts again on the same port: the port comes from `freeLoopbackPort`, so no
/// other suite can be given it while the gateway is down.
func startRestartableGateway(
    _ configure: (inout FakeGatewayConfiguration) -> Void = { _ in }
) throws -> FakeGateway {
    func start() throws -> FakeGateway {
        try FakeGateway.start {
            configure(&$0)
            $0.port = freeLoopbackPort()
        }
    }
    for _ in 0..<19 { if let gateway = try? start() { return gateway } }
    return try start()
}

/// True when something accepts connections on the loopback port.
func isListening(_ port: Int) -> Bool {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    defer { close(fd) }
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    return withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    } == 0
}

/// Stops a helper process: SIGTERM, then SIGKILL if it has not ended within three seconds.
func stopProcess(_ p: Process) {
    guard p.isRunning else { return }
    kill(p.processIdentifier, SIGTERM)
    if !eventually(timeout: 3, { !p.isRunning }) { kill(p.processIdentifier, SIGKILL) }
    p.waitUntilExit()
}

/// A path to an installed program, or nil.
func installed(_ name: String) -> String? {
    for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin", "/sbin", "/bin"]
    where FileManager.default.isExecutableFile(atPath: "\(dir)/\(name)") {
        return "\(dir)/\(name)"
    }
    return nil
}

/// A throwaway CA and a server certificate for 127.0.0.1 and localhost, made with the `openssl` command.
struct TestCertificates {
    let ca: String, cert: String, key: String

    init(in dir: String) throws {
        ca = dir + "/ca.pem"
        cert = dir + "/server.pem"
        key = dir + "/server.key"
        let ext = dir + "/server.ext"
        try "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n"
            .write(toFile: ext, atomically: true, encoding: .utf8)
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        for args in [
            ["req", "-x509"] + ec + [
                "-keyout", dir + "/ca.key", "-out", ca, "-days", "2", "-subj", "/CN=chatbatch test CA"
            ],
            ["req"] + ec + ["-keyout", key, "-out", dir + "/server.csr", "-subj", "/CN=127.0.0.1"],
            [
                "x509", "-req", "-in", dir + "/server.csr", "-CA", ca, "-CAkey", dir + "/ca.key", "-CAcreateserial",
                "-out", cert,
                "-days", "2", "-extfile", ext
            ]
        ] {
            let (code, err) = try runToEnd(installed("openssl") ?? "/usr/bin/openssl", args)
            guard code == 0 else { throw ChatBatchError(.badCACert, "openssl \(args[0]) failed: \(err)") }
        }
    }
}

/// A real nginx on loopback: TLS with HTTP/2 on `h2Port`, TLS with HTTP/1.1 only on `h1Port`, both passing
/// requests to the fake gateway over keep-alive upstream connections; access log `$connection $server_protocol
/// $status`.
final class TestNginx {
    let dir: String
    let certificates: TestCertificates
    let upstream: Int
    let maxStreams: Int
    private(set) var h2Port = 0
    private(set) var h1Port = 0
    var process: Process?

    init(dir: String, certificates: TestCertificates, upstream: Int, maxStreams: Int = 128) throws {
        self.dir = dir
        self.certificates = certificates
        self.upstream = upstream
        self.maxStreams = maxStreams
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        chmod(dir, 0o777)
        // Free ports can be taken by a test running beside this one: try others when nginx cannot bind.
        var lastError: (any Error)? = nil
        for _ in 0..<5 {
            h2Port = freeLoopbackPort()
            h1Port = freeLoopbackPort()
            do {
                try start()
                return
            } catch { lastError = error }
        }
        throw lastError!
    }

    func writeConfig() throws {
        let location = """
            location / {
                proxy_pass http://gateway; proxy_http_version 1.1; proxy_set_header Connection "";
                proxy_buffering off; proxy_read_timeout 60s;
            }
            """
        let conf = """
            worker_processes 1;
            pid \(dir)/nginx.pid;
            error_log \(dir)/error.log info;
            events { worker_connections 4096; }
            http {
                log_format wire '$connection $server_protocol $status';
                access_log \(dir)/access.log wire;
                client_body_temp_path \(dir)/body; proxy_temp_path \(dir)/proxy; fastcgi_temp_path \(dir)/fcgi;
                uwsgi_temp_path \(dir)/uwsgi; scgi_temp_path \(dir)/scgi;
                keepalive_requests 100000;
                upstream gateway { server 127.0.0.1:\(upstream); keepalive 256; }
                server {
                    listen 127.0.0.1:\(h2Port) ssl http2;
                    http2_max_concurrent_streams \(maxStreams);
                    ssl_certificate \(certificates.cert); ssl_certificate_key \(certificates.key);
                    \(location)
                }
                server {
                    listen 127.0.0.1:\(h1Port) ssl;
                    ssl_certificate \(certificates.cert); ssl_certificate_key \(certificates.key);
                    \(location)
                }
            }
            """
        try conf.write(toFile: dir + "/nginx.conf", atomically: true, encoding: .utf8)
    }

    /// Starts nginx and waits until its own error log says its worker started (it binds before that).
    func start() throws {
        try writeConfig()
        try? FileManager.default.removeItem(atPath: dir + "/error.log")
        let p = try launch(
            installed("nginx") ?? "/usr/sbin/nginx", ["-p", dir, "-c", dir + "/nginx.conf", "-g", "daemon off;"])
        process = p
        let log = { (try? String(contentsOfFile: self.dir + "/error.log", encoding: .utf8)) ?? "" }
        _ = eventually(timeout: 10) { log().contains("start worker process") || !p.isRunning }
        guard p.isRunning, log().contains("start worker process") else {
            stopProcess(p)
            throw ChatBatchError(.openFailed, "nginx did not start: \(log())")
        }
    }

    /// `nginx -s reload`: new workers, old ones finish what they have (HTTP/2 clients get GOAWAY).
    func reload() { if let p = process { kill(p.processIdentifier, SIGHUP) } }

    func stop() {
        guard let p = process else { return }
        stopProcess(p)
        _ = eventually(timeout: 5) { !isListening(self.h2Port) }
    }

    deinit { stop() }

    /// The access log: one (connection, protocol, status) per request.
    func accessLog() -> [(connection: String, proto: String, status: Int)] {
        let text = (try? String(contentsOfFile: dir + "/access.log", encoding: .utf8)) ?? ""
        return text.split(separator: "\n").compactMap { line in
            let f = line.split(separator: " ")
            return f.count >= 3 ? (String(f[0]), String(f[1]), Int(f[2]) ?? 0) : nil
        }
    }

    var h2URL: String { "https://127.0.0.1:\(h2Port)/v1" }
    var h1URL: String { "https://127.0.0.1:\(h1Port)/v1" }
}

/// A real tinyproxy on loopback that allows CONNECT to `connectPort`.
final class TestProxy {
    let port = freeLoopbackPort()
    let dir: String
    let process: Process

    init(dir: String, connectPort: Int) throws {
        self.dir = dir
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        chmod(dir, 0o777)
        let conf = """
            Port \(port)
            Listen 127.0.0.1
            Timeout 60
            Allow 127.0.0.1
            ConnectPort \(connectPort)
            MaxClients 512
            LogFile "\(dir)/tinyproxy.log"
            LogLevel Connect
            """
        try conf.write(toFile: dir + "/tinyproxy.conf", atomically: true, encoding: .utf8)
        process = try launch(installed("tinyproxy") ?? "/usr/bin/tinyproxy", ["-d", "-c", dir + "/tinyproxy.conf"])
        guard eventually(timeout: 10, { isListening(self.port) }) else {
            throw ChatBatchError(.openFailed, "tinyproxy did not start")
        }
    }

    deinit { stopProcess(process) }

    var log: String { (try? String(contentsOfFile: dir + "/tinyproxy.log", encoding: .utf8)) ?? "" }
    var url: String { "http://127.0.0.1:\(port)" }
}
