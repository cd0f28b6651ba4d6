import Glibc
import Logging

/// Plain log lines on stderr: `LEVEL mount: message`. When stderr is the journal
/// (`JOURNAL_STREAM`), each line starts with its syslog priority (`<3>`) instead, which journald
/// turns into the entry's priority.
public struct SupervisorLogHandler: LogHandler {
  public var metadata: Logger.Metadata = [:]
  public var logLevel: Logger.Level = .info
  private let label: String
  private let toJournal: Bool

  public init(label: String) {
    self.label = label
    toJournal = Self.stderrIsJournal()
  }

  public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
    get { metadata[key] }
    set { metadata[key] = newValue }
  }

  public func log(event: LogEvent) {
    let merged = metadata.merging(event.metadata ?? [:]) { $1 }
    let mount = merged["mount"].map { "\($0): " } ?? ""
    let prefix = toJournal ? "<\(Self.priority(event.level))>" : "\(event.level.rawValue.uppercased()) "
    let line = "\(prefix)\(mount)\(event.message)\n"
    // One write per line, so lines of concurrent writers never interleave.
    _ = line.withCString { write(2, $0, strlen($0)) }
  }

  static func priority(_ level: Logger.Level) -> Int {
    switch level {
    case .trace, .debug: 7
    case .info: 6
    case .notice: 5
    case .warning: 4
    case .error: 3
    case .critical: 2
    }
  }

  /// `JOURNAL_STREAM` names the device and inode of the journal's stream socket; it counts only
  /// if stderr is still that socket.
  static func stderrIsJournal() -> Bool {
    guard let value = getenv("JOURNAL_STREAM").map({ String(cString: $0) }) else { return false }
    let parts = value.split(separator: ":")
    var info = stat()
    guard parts.count == 2, fstat(2, &info) == 0 else { return false }
    return UInt64(parts[0]) == UInt64(info.st_dev) && UInt64(parts[1]) == UInt64(info.st_ino)
  }
}
