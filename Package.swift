// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "chatbatch",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "chatbatch", targets: ["chatbatch"]),
        .library(name: "ChatBatch", targets: ["ChatBatch"]),
        .library(name: "FakeGateway", targets: ["FakeGateway"]),
        .library(name: "BatchService", targets: ["BatchService"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/hummingbird-project/swift-mustache", from: "2.1.1"),
    ],
    targets: [
        .systemLibrary(
            name: "CCurl",
            pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev"])]
        ),
        .systemLibrary(
            name: "CSQLite",
            pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"])]
        ),
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        // Shared by the runner and the fake gateway: the JSON value type and small helpers.
        .target(name: "ChatBatchCore"),
        // POSIX calls Swift cannot make directly (the terminal's width).
        .target(name: "CTerminal"),
        .target(
            name: "ChatBatch",
            dependencies: [
                "CCurl", "CSQLite", "CLibPQ", "ChatBatchCore",
                .product(name: "Yams", package: "Yams"),
                .product(name: "Mustache", package: "swift-mustache"),
            ]
        ),
        .target(
            name: "FakeGateway",
            dependencies: [
                "ChatBatchCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        // `chatbatch serve`: OpenAI's Files and Batch APIs over the runner, on SwiftNIO as the fake gateway is.
        .target(
            name: "BatchService",
            dependencies: [
                "ChatBatch", "ChatBatchCore",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .executableTarget(
            name: "chatbatch",
            dependencies: [
                "ChatBatch", "FakeGateway", "BatchService", "CTerminal",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // What both test targets share (a bounded wait); a library of the tests, not of chatbatch.
        .target(name: "TestSupport", path: "Tests/TestSupport"),
        .testTarget(name: "FakeGatewayTests", dependencies: ["FakeGateway", "ChatBatchCore", "ChatBatch", "TestSupport"]),
        // Fixtures: checkpoints written by the binary of each released schema (read by SchemaFixtureTests).
        .testTarget(
            name: "ChatBatchTests",
            dependencies: ["ChatBatch", "FakeGateway", "BatchService", "ChatBatchCore", "TestSupport"],
            exclude: ["Fixtures"]),
    ]
)

// Strict settings for every Swift target, in one place (as apple/swift-log does).
for target in package.targets where target.type != .system {
    var settings = target.swiftSettings ?? []
    settings.append(.enableUpcomingFeature("ExistentialAny"))
    target.swiftSettings = settings
}
