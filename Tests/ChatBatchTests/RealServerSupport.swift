import Foundation
import TestSupport
import Testing

/// llama.cpp's `llama-server` from `../shared/real-servers` (or `CHATBATCH_REAL_SERVERS`), started on loopback for a
/// test. Absent folder, or a binary that cannot run here: `start` returns nil and says why, and the test skips.
final class LlamaServer {
    static let folder: String = {
        if let dir = ProcessInfo.processInfo.environment["CHATBATCH_REAL_SERVERS"] { return dir }
        return URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("shared/real-servers").path
    }()

    let process: Process
    let port: Int
    let arguments: [String]
    var baseURL: String { "http://127.0.0.1:\(port)/v1" }

    private init(process: Process, port: Int, arguments: [String]) {
        self.process = process
        self.port = port
        self.arguments = arguments
    }

    /// Why the suite cannot run here, or nil when it can.
    static var unavailable: String? {
        let binary = folder + "/llama-server"
        guard FileManager.default.isExecutableFile(atPath: binary),
            FileManager.default.fileExists(atPath: folder + "/tiny.gguf")
        else {
            return
                "no llama-server at \(folder) (the real-server suite needs ../shared/real-servers beside the repository)"
        }
        return nil
    }

    /// Starts it with `-np slots` and `extra` arguments, on `port` (a free one by default), and waits for /health.
    static func start(slots: Int = 8, extra: [String] = [], port: Int? = nil) throws -> LlamaServer? {
        if let why = unavailable {
            Issue.record(Comment(rawValue: why))
            return nil
        }
        let port = port ?? freeLoopbackPort()
        let arguments =
            [
                "-m", folder + "/tiny.gguf", "--host", "127.0.0.1", "--port", String(port), "-np", String(slots), "-c",
                "16384",
                "-t", "1", "--alias", "tiny", "--jinja", "--no-webui"
            ] + extra
        let p = Process()
        p.executableURL = URL(fileURLWithPath: folder + "/llama-server")
        p.arguments = arguments
        p.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        p.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try p.run()
        let server = LlamaServer(process: p, port: port, arguments: arguments)
        let up = eventually(timeout: 60) { !p.isRunning || httpStatus(port: port, path: "/health") == 200 }
        guard up, p.isRunning else {
            let how =
                p.isRunning
                ? "did not answer /health within 60 s"
                : "ended (status \(p.terminationStatus), \(p.terminationReason == .uncaughtSignal ? "killed by a signal" : "exited"))"
            Issue.record("llama-server cannot run on this machine: it \(how)")
            stopProcess(p)
            return nil
        }
        return server
    }

    /// Starts it again on the same port with the same arguments (after `kill`); does not wait for it.
    func restart() throws -> Process {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.folder + "/llama-server")
        p.arguments = arguments
        p.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        p.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try p.run()
        return p
    }

    func stop() { stopProcess(process) }
    deinit { stop() }
}

/// The status of `GET path` on a loopback port, or nil when nothing answers (a raw socket: no client library).
func httpStatus(port: Int, path: String) -> Int? {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var timeout = timeval(tv_sec: 2, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var addr = sockaddr_in()
    addr.sin_family = sa_family_t(AF_INET)
    addr.sin_addr.s_addr = inet_addr("127.0.0.1")
    addr.sin_port = in_port_t(UInt16(port).bigEndian)
    let connected = withUnsafePointer(to: &addr) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    guard connected == 0 else { return nil }
    let request = Array("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".utf8)
    guard write(fd, request, request.count) == request.count else { return nil }
    var buffer = [UInt8](repeating: 0, count: 64)
    let n = read(fd, &buffer, buffer.count)
    guard n > 12 else { return nil }
    return Int(String(decoding: buffer[9..<12], as: UTF8.self))
}
