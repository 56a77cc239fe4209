import Foundation
import Synchronization

/// A PostgreSQL server of a test's own: `initdb` and `pg_ctl` in a temporary folder, listening on a loopback port
/// with a password (SCRAM), never the system's cluster. PostgreSQL refuses to run as root: when the tests do (as in
/// CI), the server runs as `nobody`. Stopped and removed when the value goes.
final class PostgresServer: @unchecked Sendable {
    let folder: String
    let port: Int
    static let user = "chatbatch"
    let password = "pg-Secret-" + UUID().uuidString.prefix(8)
    private let bin: String

    /// The folder holding `initdb` and `pg_ctl`: on the PATH, else Debian's newest `/usr/lib/postgresql/N/bin`.
    static let binaries: String? = {
        let path = (ProcessInfo.processInfo.environment["PATH"] ?? "").split(separator: ":").map(String.init)
        let debian = ((try? FileManager.default.contentsOfDirectory(atPath: "/usr/lib/postgresql")) ?? [])
            .sorted { (Int($0) ?? 0) > (Int($1) ?? 0) }.map { "/usr/lib/postgresql/\($0)/bin" }
        return (path + debian).first { FileManager.default.isExecutableFile(atPath: $0 + "/initdb") }
            .map { URL(fileURLWithPath: $0 + "/initdb").resolvingSymlinksInPath().deletingLastPathComponent().path }
    }()

    /// Starts a new server (a new cluster in a new folder).
    init() throws {
        guard let bin = Self.binaries else {
            throw Failure("initdb is not installed (Debian: apt-get install postgresql)")
        }
        self.bin = bin
        port = freeLoopbackPort()
        folder = FileManager.default.temporaryDirectory.appendingPathComponent("chatbatch-pg-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: folder, withIntermediateDirectories: true)
        try password.write(toFile: folder + "/pwfile", atomically: true, encoding: .utf8)
        try String(getpid()).write(toFile: folder + "/owner", atomically: true, encoding: .utf8)
        if getuid() == 0 {
            guard let nobody = getpwnam("nobody"), chown(folder, nobody.pointee.pw_uid, nobody.pointee.pw_gid) == 0
            else { throw Failure("cannot give \(folder) to nobody") }
        }
        let (status, text) = try asOwner(
            bin + "/initdb",
            [
                "-D", folder + "/data", "-U", Self.user, "--pwfile", folder + "/pwfile", "--auth", "scram-sha-256",
                "-E", "UTF8", "--no-locale", "--no-sync"
            ])
        guard status == 0 else { throw Failure("initdb failed: \(text)") }
        Self.running.withLock { $0[folder] = bin }
        try start()
    }

    deinit {
        Self.remove(folder: folder, bin: bin)
        _ = Self.running.withLock { $0.removeValue(forKey: folder) }
    }

    /// Servers not yet removed, by folder: a suite's shared server lives in a static, which is never released, so
    /// the test process stops what is left when it exits.
    private static let running: Mutex<[String: String]> = {
        sweep()
        atexit {
            for (folder, bin) in PostgresServer.running.withLock({ $0 }) {
                PostgresServer.remove(folder: folder, bin: bin)
            }
        }
        return Mutex([:])
    }()

    /// Stops and removes the servers of test processes that are gone (killed, so their exit handler never ran):
    /// each server's folder names the process that started it (`owner`).
    private static func sweep() {
        let tmp = FileManager.default.temporaryDirectory.path
        for name in (try? FileManager.default.contentsOfDirectory(atPath: tmp)) ?? []
        where name.hasPrefix("chatbatch-pg-") {
            let folder = tmp + "/" + name
            guard let owner = try? String(contentsOfFile: folder + "/owner", encoding: .utf8),
                let pid = Int32(owner.trimmingCharacters(in: .whitespacesAndNewlines)),
                kill(pid, 0) != 0 && errno == ESRCH, let bin = binaries
            else { continue }
            remove(folder: folder, bin: bin)
        }
    }

    private static func remove(folder: String, bin: String) {
        _ = try? asOwner(bin + "/pg_ctl", ["-D", folder + "/data", "-m", "immediate", "-w", "stop"], folder: folder)
        try? FileManager.default.removeItem(atPath: folder)
    }

    /// The address of database `database` with the password in it (or `password` instead of the right one).
    func url(database: String = "postgres", password: String? = nil) -> String {
        "postgres://\(Self.user):\(password ?? self.password)@127.0.0.1:\(port)/\(database)"
    }

    /// Starts the server (waiting until it accepts connections: `pg_ctl -w`).
    func start() throws {
        let options = "-p \(port) -c listen_addresses=127.0.0.1 -c unix_socket_directories='\(folder)' -c fsync=off"
        let (status, text) = try asOwner(
            bin + "/pg_ctl", ["-D", folder + "/data", "-l", folder + "/log", "-o", options, "-w", "start"])
        guard status == 0 else { throw Failure("pg_ctl start failed: \(text) \(log)") }
    }

    /// Stops the server at once, as a crash or a restart by its operator would (`-m immediate`).
    func stop() throws {
        let (status, text) = try asOwner(
            bin + "/pg_ctl", ["-D", folder + "/data", "-m", "immediate", "-w", "stop"])
        guard status == 0 else { throw Failure("pg_ctl stop failed: \(text)") }
    }

    /// The server's log, for a failure's message.
    var log: String { (try? String(contentsOfFile: folder + "/log", encoding: .utf8)) ?? "" }

    /// Runs a PostgreSQL program as the cluster's owner (`nobody` when the tests run as root) and returns its exit
    /// status and output. Spawned and reaped directly: `pg_ctl start` leaves a server behind it, and Foundation's
    /// `Process` was seen never to reap the `runuser` that started one.
    private func asOwner(_ program: String, _ arguments: [String]) throws -> (Int32, String) {
        try Self.asOwner(program, arguments, folder: folder)
    }

    private static func asOwner(_ program: String, _ arguments: [String], folder: String) throws -> (Int32, String) {
        let argv = (getuid() == 0 ? ["/usr/sbin/runuser", "-u", "nobody", "--", program] : [program]) + arguments
        let output = folder + "/command-\(UUID().uuidString).out"
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, output, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        let cArgs = argv.map { strdup($0) } + [nil]
        defer { cArgs.forEach { free($0) } }
        var pid: pid_t = 0
        let rc = posix_spawn(&pid, argv[0], &actions, nil, cArgs, environ)
        guard rc == 0 else { throw Failure("cannot start \(argv[0]): \(String(cString: strerror(rc)))") }
        var status: Int32 = 0
        while waitpid(pid, &status, 0) == -1 && errno == EINTR {}
        let text = (try? String(contentsOfFile: output, encoding: .utf8)) ?? ""
        try? FileManager.default.removeItem(atPath: output)
        // WIFEXITED / WEXITSTATUS, which Swift does not import.
        return (status & 0x7f == 0 ? (status >> 8) & 0xff : 128 + (status & 0x7f), text)
    }

    struct Failure: Error, CustomStringConvertible {
        let description: String
        init(_ text: String) { description = text }
    }
}
