import ChatBatch
import ChatBatchCore
import Foundation

/// The Files API: upload (multipart, `purpose=batch`, every line checked), list, read, download, delete.
extension BatchService {
    func uploadFile(_ r: ServiceRequest) throws -> ServiceResponse {
        let id = BatchFolder.newID("file-")
        let upload = folder.uploadPath(id)
        defer { try? FileManager.default.removeItem(atPath: upload) }
        guard let boundary = r.headers["content-type"].flatMap(MultipartUpload.boundary(contentType:)),
            let spool = r.spool,
            let form = try MultipartUpload(spool: spool, boundary: boundary, filePath: upload)
        else {
            throw APIError(400, "Expected a multipart/form-data body with the fields 'purpose' and 'file'.")
        }
        let purpose = form.fields["purpose"] ?? ""
        guard purpose == "batch" else {
            throw APIError(
                400, "'purpose' must be 'batch' (this server holds batch input files only), not '\(purpose)'.",
                param: "purpose")
        }
        guard form.fileBytes <= settings.maxFileBytes else {
            throw APIError(
                413, "The file is \(form.fileBytes) bytes; at most \(settings.maxFileBytes) are allowed.",
                code: "file_too_large")
        }
        let filename = form.filename ?? "upload.jsonl"
        let (lines, urls) = try check(upload, name: filename)
        try FileManager.default.moveItem(atPath: upload, toPath: folder.filePath(id))
        let record = FileRecord(
            id: id, bytes: form.fileBytes, createdAt: Self.now(), filename: filename, purpose: "batch", lines: lines,
            urls: urls.sorted())
        try register(record)
        return .json(record.json)
    }

    /// Checks every line of an uploaded file as the Batch API does and as `chatbatch validate` does; returns its
    /// number of lines and the urls they name, or a 400 that names the first bad line (and how many more there are).
    func check(_ path: String, name: String) throws -> (lines: Int, urls: Set<String>) {
        var lines = 0
        var problems: [String] = []
        var ids = Set<String>()
        var urls = Set<String>()
        let reader = try LineReader(path: path)
        while let line = try reader.next() {
            if line.isBlank { continue }
            lines += 1
            let place = "\(name):\(line.number)"
            guard problems.count < 100 else { continue }
            if let size = line.oversize {
                problems.append("\(place): line is \(size) bytes, more than a line may hold")
                continue
            }
            guard let object = (try? JSON.parse(line.bytes))?.objectValue else {
                problems.append("\(place): not a JSON object")
                continue
            }
            guard let id = object["custom_id"]?.stringValue, !id.isEmpty else {
                problems.append("\(place): every line needs a custom_id (a non-empty string)")
                continue
            }
            if !ids.insert(id).inserted { problems.append("\(place): custom_id '\(id)' is used by an earlier line") }
            if let url = object["url"]?.stringValue { urls.insert(url) }
            if object["method"]?.stringValue != "POST" || object["url"]?.stringValue == nil || object["body"] == nil {
                problems.append("\(place): every line needs \"method\": \"POST\", a url and a body")
            }
        }
        guard lines > 0 else { throw APIError(400, "\(name): the file holds no request lines.") }
        guard lines <= settings.maxLines else {
            throw APIError(400, "\(name): \(lines) lines; a batch file holds at most \(settings.maxLines).")
        }
        if problems.isEmpty {
            var job = settings.job
            job.input = path
            job.output = path + ".validate.jsonl"
            let report = try BatchValidator.validate(job.resolve(), useCheckpoint: false)
            if report.invalid > 0 {
                // Warnings (an unknown field) do not refuse a file; invalid lines do.
                problems = report.problems.filter { !$0.contains("warning:") }.map {
                    $0.replacingOccurrences(of: path, with: name)
                }
            }
        }
        if let first = problems.first {
            let more = problems.count > 1 ? " (and \(problems.count - 1) more problems)" : ""
            throw APIError(400, first + more, code: "invalid_file")
        }
        return (lines, urls)
    }

    func listFiles() -> ServiceResponse {
        let files = state.withLock { Array($0.files.values) }.sorted { ($0.createdAt, $0.id) > ($1.createdAt, $1.id) }
        return .json(["object": "list", "data": .array(files.map(\.json)), "has_more": false])
    }

    func content(_ id: String) throws -> ServiceResponse {
        let f = try file(id)
        let path = f.path ?? folder.filePath(id)
        guard let size = (try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? Int else {
            throw APIError.notFound("file content", id)
        }
        return ServiceResponse(status: 200, body: [], contentType: "application/octet-stream", file: (path, size))
    }

    func deleteFile(_ id: String) throws -> ServiceResponse {
        let f = try file(id)
        let inUse = state.withLock { s in s.batches.values.contains { $0.inputFileID == id && $0.status.isActive } }
        guard !inUse else {
            throw APIError(409, "File \(id) is the input of a batch that is running; cancel it first.")
        }
        if f.path == nil {
            folder.remove(file: id)
        } else {
            try? FileManager.default.removeItem(atPath: folder.root + "/files/\(id).json")
        }
        state.withLock { _ = $0.files.removeValue(forKey: id) }
        return .json(["id": .string(id), "object": "file", "deleted": true])
    }
}
