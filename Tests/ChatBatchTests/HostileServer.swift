import Foundation
import TestSupport

/// A small hostile server on loopback (Python's standard library, as every machine here has it): the first path
/// segment names what it does to each request, and it records every request's path and Authorization header.
///
/// Modes: `uescape`, `slash`, `base64`, `urlenc` (a 200 answer whose content echoes the key in that encoding),
/// `split` (a stream whose content deltas split the key across three events), `ansi` (a 400 whose message carries
/// terminal escapes and a forged log line), `hugelength` (a Content-Length of 1 GiB), `endless` (a chunked body that
/// never ends), `gzipbomb` (a small gzip body that inflates to 64 MiB), `ok` (a plain answer), `connect403` (as a
/// proxy: refuses every CONNECT).
final class HostileServer {
    let process: Process
    let port: Int
    let log: String

    static let script = #"""
        import base64, gzip, http.server, json, socketserver, sys, urllib.parse
        LOG = sys.argv[1]
        BOMB = gzip.compress(b'{"x":"' + b'0' * (64 << 20) + b'"}', 9)
        def answer(text):
            return json.dumps({"id": "chatcmpl-h", "object": "chat.completion", "created": 1, "model": "m",
                "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}})
        class H(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def log_message(self, *a): pass
            def do_CONNECT(self):
                with open(LOG, "a") as f: f.write(json.dumps({"path": "CONNECT " + self.path}) + "\n")
                self.send_response(403); self.send_header("Content-Length", "0"); self.end_headers()
            def do_POST(self):
                n = int(self.headers.get("Content-Length", "0")); self.rfile.read(n)
                auth = self.headers.get("Authorization", "")
                key = auth[7:] if auth.startswith("Bearer ") else auth
                with open(LOG, "a") as f: f.write(json.dumps({"path": self.path, "authorization": auth}) + "\n")
                mode = self.path.strip("/").split("/")[0]
                def send(status, body, ctype="application/json", extra=()):
                    self.send_response(status); self.send_header("Content-Type", ctype)
                    for k, v in extra: self.send_header(k, v)
                    self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
                if mode == "uescape":
                    body = answer("KEY").replace('"KEY"', '"' + "".join("\\u%04x" % ord(c) for c in key) + '"')
                    send(200, body.encode())
                elif mode == "slash":
                    send(200, answer("the key: " + key).replace("/", "\\/").encode())
                elif mode == "base64":
                    send(200, answer("token " + base64.b64encode(b"x" + key.encode()).decode()).encode())
                elif mode == "urlenc":
                    send(200, answer("see ?k=" + urllib.parse.quote(key, safe="")).encode())
                elif mode == "split":
                    third = max(1, len(key) // 3)
                    parts = ["Your key is ", key[:third], key[third:2 * third], key[2 * third:], "."]
                    events = []
                    for p in parts:
                        events.append(json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                            "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}]}))
                    events.append(json.dumps({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
                        "usage": {"prompt_tokens": 3, "completion_tokens": 5, "total_tokens": 8}}))
                    body = "".join("data: " + e + "\n\n" for e in events) + "data: [DONE]\n\n"
                    send(200, body.encode(), "text/event-stream")
                elif mode == "lines":
                    msg = "Incorrect API key provided: " + key[:10] + "\n" + key[10:] + ". You can find your key at …"
                    send(401, json.dumps({"error": {"message": msg, "type": "invalid_request_error", "code": "invalid_api_key"}}).encode())
                elif mode == "ansi":
                    msg = "\x1b]0;pwned\x07\x1b[2J\r\nchatbatch: all 2 lines done \u202eevil\u009b31m"
                    send(400, json.dumps({"error": {"message": msg, "type": "invalid_request_error", "code": "x\x1b[31m"}}).encode())
                elif mode == "hugelength":
                    self.send_response(200); self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(1 << 30)); self.end_headers()
                    try:
                        for _ in range(1 << 14): self.wfile.write(b"0" * 65536)
                    except Exception: pass
                elif mode == "endless":
                    self.send_response(200); self.send_header("Content-Type", "application/json")
                    self.send_header("Transfer-Encoding", "chunked"); self.end_headers()
                    try:
                        for _ in range(1 << 14):
                            chunk = b"0" * 65536
                            self.wfile.write(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                    except Exception: pass
                elif mode == "gzipbomb":
                    send(200, BOMB, extra=[("Content-Encoding", "gzip")])
                else:
                    send(200, answer("fine").encode())
        class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
        s = S(("127.0.0.1", 0), H)
        with open(LOG + ".port", "w") as f: f.write(str(s.server_address[1]))
        s.serve_forever()
        """#

    init(log: String) throws {
        self.log = log
        let p = Process()
        p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        p.arguments = ["python3", "-c", Self.script, log]
        p.standardOutput = FileHandle(forWritingAtPath: "/dev/null")
        p.standardError = FileHandle(forWritingAtPath: "/dev/null")
        try p.run()
        process = p
        // It writes its port to LOG.port once it listens.
        var found = 0
        _ = eventually(timeout: 30) {
            found = (try? String(contentsOfFile: log + ".port", encoding: .utf8)).flatMap { Int($0) } ?? 0
            return found > 0 || !p.isRunning
        }
        port = found
    }

    deinit { stop() }

    func stop() {
        if process.isRunning {
            // SIGKILL: a child started from a test thread inherits that thread's blocked signals, SIGTERM among them.
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }

    /// `http://127.0.0.1:PORT/MODE/v1`.
    func baseURL(_ mode: String) -> String { "http://127.0.0.1:\(port)/\(mode)/v1" }

    /// What it received: each request's path and Authorization header.
    func requests() -> [[String: String]] {
        guard let text = try? String(contentsOfFile: log, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { line in
            (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: String]
        }
    }
}
