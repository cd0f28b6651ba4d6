import CSystemd
import Glibc
import Logging

/// The supervisor's log output.
///
/// When stderr is the journal (`JOURNAL_STREAM`), each entry goes to journald natively through
/// `sd_journal_sendv`, with fields to filter by: `MESSAGE`, `PRIORITY`, `SYSLOG_IDENTIFIER` (the
/// logger's label, `mountsupd`), `MOUNT_NAME` (metadata `mount`), `WORKER_PID` and `OBJECT_PID`
/// (metadata `pid`), `MOUNTSUP_<KEY>` for any other metadata, and `CODE_*`. So
/// `journalctl -u mountsupd MOUNT_NAME=photos` shows one mount's story, the output of its workers
/// included.
///
/// Otherwise plain lines on stderr: `LEVEL mount[pid]: message`.
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
    if toJournal {
      let merged = event.metadata.map { metadata.merging($0) { $1 } } ?? metadata
      if Self.sendToJournal(journalFields(event, merged)) { return }
    }
    // journald reads a leading `<N>` on a stream line as the priority, should the native
    // protocol have failed.
    var line = toJournal ? "<\(Self.priority(event.level))>" : Self.linePrefix(event.level)
    // Every start logs a few lines per mount: no merged dictionary, one string.
    if let name = event.metadata?["mount"] ?? metadata["mount"] {
      line += "\(name)"
      if let pid = event.metadata?["pid"] ?? metadata["pid"] { line += "[\(pid)]" }
      line += ": "
    }
    line += event.message.description
    line += "\n"
    // One write per line, so lines of concurrent writers never interleave.
    _ = line.withUTF8 { write(2, $0.baseAddress, $0.count) }
  }

  /// `INFO `, `NOTICE `, …: the level as a plain line starts.
  static func linePrefix(_ level: Logger.Level) -> String {
    switch level {
    case .trace: "TRACE "
    case .debug: "DEBUG "
    case .info: "INFO "
    case .notice: "NOTICE "
    case .warning: "WARNING "
    case .error: "ERROR "
    case .critical: "CRITICAL "
    }
  }

  /// The journal fields of one entry, each `NAME=value`.
  func journalFields(_ event: LogEvent, _ metadata: Logger.Metadata) -> [String] {
    var fields = [
      "MESSAGE=\(event.message)",
      "PRIORITY=\(Self.priority(event.level))",
      "SYSLOG_IDENTIFIER=\(label)",
      "CODE_FILE=\(event.file)",
      "CODE_LINE=\(event.line)",
      "CODE_FUNC=\(event.function)",
    ]
    for (key, value) in metadata.sorted(by: { $0.key < $1.key }) {
      switch key {
      case "mount":
        fields.append("MOUNT_NAME=\(value)")
      case "pid":
        fields.append("WORKER_PID=\(value)")
        // Lets journald add the worker's _COMM, _CMDLINE and so on as OBJECT_* fields.
        fields.append("OBJECT_PID=\(value)")
      default:
        fields.append("MOUNTSUP_\(Self.journalFieldName(key))=\(value)")
      }
    }
    return fields
  }

  /// A metadata key as the tail of a journal field name: upper-case letters, digits and `_`.
  static func journalFieldName(_ key: String) -> String {
    String(
      key.uppercased().unicodeScalars.prefix(54).map { scalar in
        switch scalar {
        case "A"..."Z", "0"..."9": Character(scalar)
        default: "_"
        }
      })
  }

  /// Sends one entry over journald's native protocol; false when journald did not take it.
  static func sendToJournal(_ fields: [String]) -> Bool {
    var bytes: [UInt8] = []
    var ranges: [Range<Int>] = []
    for field in fields {
      let start = bytes.count
      bytes += field.utf8
      ranges.append(start..<bytes.count)
    }
    return bytes.withUnsafeMutableBytes { buffer in
      var vectors = ranges.map {
        iovec(iov_base: buffer.baseAddress! + $0.lowerBound, iov_len: $0.count)
      }
      return mountsup_sd_journal_sendv(&vectors, Int32(vectors.count)) >= 0
    }
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
