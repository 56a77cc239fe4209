import ArgumentParser
import ChatBatch

// The library's fixed sets of names are flag values as they are: argument-parser reads them, lists them in `--help`
// and writes the "one of …" message for a wrong one (exit 2, as every usage error).
extension ProviderKind: ExpressibleByArgument {}
extension OutputFormat: ExpressibleByArgument {}
extension OtherEndpointAnswers: ExpressibleByArgument {}
extension CacheMode: ExpressibleByArgument {}
extension CheckpointExport.Order: ExpressibleByArgument {}
