import ArgumentParser
import BatchService
import ChatBatch
import Foundation

/// `chatbatch serve`: OpenAI's Files and Batch APIs on a provider that has none.
struct ServeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "serve",
        abstract: "Serve OpenAI's Files and Batch APIs over chatbatch's runner, for a provider that has none.",
        discussion: """
            JOB is a job file that says where the lines go (provider, base_url, the provider's key, concurrency, prices, retries); each batch's input and outputs are its own. Clients send the key in --client-key-env (default CHATBATCH_SERVE_KEY) as 'Authorization: Bearer KEY'. Prints its base URL (http://HOST:PORT/v1) as its first line.
            Routes: POST /v1/files (multipart, purpose=batch), GET /v1/files, GET /v1/files/{id}, GET /v1/files/{id}/content, DELETE /v1/files/{id}, POST /v1/batches (Idempotency-Key honoured), GET /v1/batches, GET /v1/batches/{id}, POST /v1/batches/{id}/cancel.
            Up to four batches run at once, in the order they were created, sharing the job's concurrency equally, each on a checkpoint of its own under --data. SIGTERM, SIGINT or SIGHUP: the listener closes, the running batch stops sending and lets what is in flight finish, and the server exits 0; started again on the same --data, it takes every batch up where it stood.
            """)

    @Argument(help: "The job file: provider, base_url, the provider's key, concurrency, prices.") var job: String
    @Option(help: "The data folder: files, batches and their checkpoints.") var data: String
    @Option(help: "Address to listen on (loopback by default; put TLS in a proxy in front).") var host = "127.0.0.1"
    @Option(help: "Port to listen on; 0 picks a free one.") var port = 8080
    @Option(help: "The environment variable that holds the key clients must send.")
    var clientKeyEnv = "CHATBATCH_SERVE_KEY"
    @Option(help: "The largest file a client may upload, in bytes (the Batch API's limit by default).")
    var maxFileBytes = 200 << 20

    func run() throws {
        guard let key = ProcessInfo.processInfo.environment[clientKeyEnv], !key.isEmpty else {
            fail(
                "no client key: set \(clientKeyEnv) to the key clients must send (or name another variable with "
                    + "--client-key-env)", code: RunExit.usageOrInput.rawValue)
        }
        let settings: JobSettings
        do { settings = try JobFile.load(path: job) } catch { fail("\(error)", code: RunExit.usageOrInput.rawValue) }
        var stopSignals = sigset_t()
        sigemptyset(&stopSignals)
        for s in [SIGINT, SIGTERM, SIGHUP] { sigaddset(&stopSignals, s) }
        pthread_sigmask(SIG_BLOCK, &stopSignals, nil)
        var options = BatchService.Settings(dataFolder: data, job: settings, clientKey: key)
        options.maxFileBytes = maxFileBytes
        options.log = { Stream.write($0 + "\n") }
        let service: BatchService
        let server: BatchHTTPServer
        do {
            service = try BatchService(options)
            server = try BatchHTTPServer(service: service, host: host, port: port)
        } catch {
            fail("chatbatch serve: \(error)", code: RunExit.usageOrInput.rawValue)
        }
        print("http://\(host):\(server.port)/v1")
        fflush(nil)
        var received: Int32 = 0
        sigwait(&stopSignals, &received)
        Stream.write("chatbatch serve: stopping: the running batch drains; it resumes at the next start\n")
        server.shutdown()
        service.drain()
        Stream.write("chatbatch serve: stopped\n")
    }
}
