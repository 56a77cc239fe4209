import Foundation

/// Waits (bounded) until `condition` holds: for effects another process or thread records after the call that caused
/// them returns. Polls every 5 ms; gives up after `timeout` seconds and returns what the condition says then. The one
/// such helper of both test targets.
public func eventually(timeout: Double = 10, _ condition: () -> Bool) -> Bool {
    let end = Date().addingTimeInterval(timeout)
    while Date() < end {
        if condition() { return true }
        usleep(5_000)
    }
    return condition()
}
