#if canImport(FoundationEssentials)
  import FoundationEssentials
#else
  import Foundation
#endif

/// The control protocol between `mountsupd` and `mountctl`: one JSON request per line, one or
/// more JSON responses per line (see docs/control-protocol.md).
///
/// Every message carries ``version`` so that a `mountctl` and a `mountsupd` from different
/// releases notice the mismatch instead of misreading each other.
public enum ControlProtocol {
  /// The protocol version this build speaks; bumped on any incompatible change.
  public static let version = 1

  /// Where the daemon listens unless `[supervisor] control_socket` says otherwise; the same as
  /// `SupervisorSettings.defaultControlSocket` of MountConfig (a test holds them equal), kept
  /// here so that `mountctl` needs nothing of the configuration.
  public static let defaultSocketPath = "/run/mountsup/control.sock"

  /// The longest request line the daemon accepts; a longer one is refused and the client
  /// dropped, so that no client can make the daemon buffer without bound.
  public static let maximumRequestLength = 64 * 1024

  /// One message as it goes over the socket: compact JSON, keys sorted, ending in a newline
  /// (JSON escapes every newline inside strings, so a line is a message).
  public static func encodeLine(_ value: some Encodable) -> [UInt8] {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    // Every type of this protocol encodes only strings, numbers, booleans, arrays and nulls.
    let data = try! encoder.encode(value)
    return Array(data) + [UInt8(ascii: "\n")]
  }

  /// Decodes one line (without its newline); a failure is described for the peer by
  /// ``describe(_:)``.
  public static func decode<T: Decodable>(_ type: T.Type, from line: some Collection<UInt8>) throws
    -> T
  {
    try JSONDecoder().decode(type, from: Data(line))
  }

  /// A decoding failure in words a person who wrote the request by hand can act on.
  public static func describe(_ error: any Error) -> String {
    guard let error = error as? DecodingError else { return "\(error)" }
    func path(_ context: DecodingError.Context) -> String {
      let keys = context.codingPath.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
      return keys.isEmpty ? "the message" : "\"\(keys.joined(separator: "."))\""
    }
    switch error {
    case .dataCorrupted(let context):
      if context.codingPath.isEmpty { return "not a JSON object on one line" }
      return "invalid value at \(path(context)): \(context.debugDescription)"
    case .keyNotFound(let key, _):
      return "missing key \"\(key.stringValue)\""
    case .typeMismatch(let type, let context):
      return "wrong type at \(path(context)): expected \(typeName(type))"
    case .valueNotFound(let type, let context):
      return "null at \(path(context)): expected \(typeName(type))"
    @unknown default:
      return "\(error)"
    }
  }

  private static func typeName(_ type: Any.Type) -> String {
    switch type {
    case is String.Type: "a string"
    case is Bool.Type: "a boolean"
    case is Int.Type, is Int64.Type: "an integer"
    case is [String].Type: "an array of strings"
    default: "\(type)"
    }
  }
}

/// What a request asks the daemon to do.
public enum ControlCommand: String, Codable, Sendable, CaseIterable {
  case status
  case start
  case stop
  case restart
  case reload
  case logs
  case waitReady = "wait-ready"
  case abort
  case upgrade
  /// The metrics in the Prometheus text format (docs/metrics.md).
  case metrics

  /// Commands that change what runs: only root and `admin_group` may send them; `status_group`
  /// may send the others.
  public var changesState: Bool {
    switch self {
    case .start, .stop, .restart, .reload, .abort, .upgrade: true
    case .status, .logs, .waitReady, .metrics: false
    }
  }

  public init(from decoder: any Decoder) throws {
    let text = try decoder.singleValueContainer().decode(String.self)
    guard let command = ControlCommand(rawValue: text) else {
      let known = Self.allCases.map(\.rawValue).joined(separator: ", ")
      throw DecodingError.dataCorrupted(
        .init(
          codingPath: decoder.codingPath,
          debugDescription: "unknown command \"\(text)\" (known: \(known))"))
    }
    self = command
  }
}

/// One request line.
public struct ControlRequest: Codable, Sendable, Equatable {
  public var version: Int
  public var command: ControlCommand
  /// Mounts the command applies to; empty means every mount for `status` and `wait-ready`.
  public var names: [String]
  /// `start`/`stop`/`restart`: answer at once instead of when the mount reached the state.
  public var noBlock: Bool
  /// `logs`: how many of the last captured lines; nil for all that are kept.
  public var lines: Int?
  /// `logs`: after the captured lines, stream new ones until the client disconnects.
  public var follow: Bool
  /// `wait-ready`: give up after this many milliseconds; nil waits until ready or failed.
  public var timeoutMilliseconds: Int64?
  /// `upgrade`: the binary to exec; nil for the file the daemon was started from.
  public var binary: String?

  public init(
    _ command: ControlCommand, names: [String] = [], noBlock: Bool = false, lines: Int? = nil,
    follow: Bool = false, timeoutMilliseconds: Int64? = nil, binary: String? = nil
  ) {
    version = ControlProtocol.version
    self.command = command
    self.names = names
    self.noBlock = noBlock
    self.lines = lines
    self.follow = follow
    self.timeoutMilliseconds = timeoutMilliseconds
    self.binary = binary
  }

  enum CodingKeys: String, CodingKey {
    case version, command, names, lines, follow, binary
    case noBlock = "no_block"
    case timeoutMilliseconds = "timeout_ms"
  }

  /// Only `version` and `command` are required, so a request is easy to type by hand.
  public init(from decoder: any Decoder) throws {
    let container = try decoder.container(keyedBy: CodingKeys.self)
    version = try container.decode(Int.self, forKey: .version)
    command = try container.decode(ControlCommand.self, forKey: .command)
    names = try container.decodeIfPresent([String].self, forKey: .names) ?? []
    noBlock = try container.decodeIfPresent(Bool.self, forKey: .noBlock) ?? false
    lines = try container.decodeIfPresent(Int.self, forKey: .lines)
    follow = try container.decodeIfPresent(Bool.self, forKey: .follow) ?? false
    timeoutMilliseconds = try container.decodeIfPresent(Int64.self, forKey: .timeoutMilliseconds)
    binary = try container.decodeIfPresent(String.self, forKey: .binary)
  }
}

/// Only the version of a request, read first so that a request of another protocol version
/// gets `unsupported-version` rather than a confusing decoding error.
public struct ControlEnvelope: Decodable, Sendable {
  public var version: Int
}

/// Why a request failed, for programs (``code``) and people (``message``).
public struct ControlError: Codable, Sendable, Equatable, Error, CustomStringConvertible {
  /// Extensible: a client should treat an unknown code like `failed`.
  public struct Code: RawRepresentable, Codable, Hashable, Sendable {
    public var rawValue: String
    public init(rawValue: String) { self.rawValue = rawValue }

    /// The line is not a valid request (not JSON, unknown command, wrong types).
    public static let badRequest = Code(rawValue: "bad-request")
    /// The request's `version` is not the daemon's.
    public static let unsupportedVersion = Code(rawValue: "unsupported-version")
    /// The line exceeds ``ControlProtocol/maximumRequestLength``; the connection is closed.
    public static let requestTooLong = Code(rawValue: "request-too-long")
    /// The client sent no complete request in time, or read its responses too slowly.
    public static let clientTimeout = Code(rawValue: "client-timeout")
    /// The daemon serves its maximum number of control connections; try again later.
    public static let tooManyClients = Code(rawValue: "too-many-clients")
    /// The peer (by `SO_PEERCRED`) may not do this.
    public static let permissionDenied = Code(rawValue: "permission-denied")
    /// A name that is not a configured mount.
    public static let unknownMount = Code(rawValue: "unknown-mount")
    /// A mount did not reach the requested state (it failed, or was stopped or removed).
    public static let failed = Code(rawValue: "failed")
    /// `wait-ready` ran out of time.
    public static let timeout = Code(rawValue: "timeout")
    /// `reload` found the new configuration invalid; nothing changed.
    public static let invalidConfig = Code(rawValue: "invalid-config")
    /// The daemon is stopping every mount and exits.
    public static let shuttingDown = Code(rawValue: "shutting-down")
    /// The daemon is replacing its binary (`upgrade`); the same request succeeds once it serves
    /// again, within milliseconds.
    public static let upgrading = Code(rawValue: "upgrading")

    public init(from decoder: any Decoder) throws {
      rawValue = try decoder.singleValueContainer().decode(String.self)
    }

    public func encode(to encoder: any Encoder) throws {
      var container = encoder.singleValueContainer()
      try container.encode(rawValue)
    }
  }

  public var code: Code
  public var message: String

  public init(_ code: Code, _ message: String) {
    self.code = code
    self.message = message
  }

  public var description: String { message }
}

/// One response line.
public struct ControlResponse: Codable, Sendable, Equatable {
  public var version: Int
  public var ok: Bool
  /// Set exactly when `ok` is false.
  public var error: ControlError?
  /// `status`: the service as a whole.
  public var service: ServiceStatus?
  /// The mounts the request named (all for `status`/`wait-ready` without names), in the
  /// supervisor's order (parents before the mounts nested in them).
  public var mounts: [MountStatus]?
  /// `reload`: what the applied configuration changed.
  public var reload: ReloadResult?
  /// `logs`: captured output lines of the worker, oldest first.
  public var lines: [String]?
  /// `metrics`: the Prometheus text exposition, exactly as the metrics file and listener serve it.
  public var metrics: String?
  /// True while further responses to the same request follow: `logs` sends its lines in
  /// pieces, and `logs` with `follow` keeps sending.
  public var more: Bool?
  /// `upgrade`: what replaced what, sent by the new binary.
  public var upgrade: UpgradeResult?

  public init(
    ok: Bool = true, error: ControlError? = nil, service: ServiceStatus? = nil,
    mounts: [MountStatus]? = nil, reload: ReloadResult? = nil, lines: [String]? = nil,
    metrics: String? = nil, more: Bool? = nil, upgrade: UpgradeResult? = nil
  ) {
    version = ControlProtocol.version
    self.ok = ok
    self.error = error
    self.service = service
    self.mounts = mounts
    self.reload = reload
    self.lines = lines
    self.metrics = metrics
    self.more = more
    self.upgrade = upgrade
  }

  public static func failure(
    _ code: ControlError.Code, _ message: String, mounts: [MountStatus]? = nil
  ) -> Self {
    ControlResponse(ok: false, error: ControlError(code, message), mounts: mounts)
  }
}

/// The service as a whole, as `status` reports it.
public struct ServiceStatus: Codable, Sendable, Equatable {
  /// READY=1 was sent: every required mount has been confirmed (it stays true afterwards).
  public var ready: Bool
  /// The STATUS text the service manager shows, e.g. "2/3 mounts ready; photos: starting".
  public var status: String
  /// A reload is applied and waits for its mounts to settle.
  public var reloading: Bool
  /// SIGTERM/SIGINT (or a failed required mount) stops everything; the daemon then exits.
  public var shuttingDown: Bool
  /// The configuration files in use, main file first.
  public var configFiles: [String]
  public var pid: Int32
  /// The daemon's release and commit, e.g. "0.3.0 (commit 1a2b3c4d5e6f)": after an upgrade,
  /// the new binary's.
  public var version: String
  /// When the daemon started (seconds since the epoch); an upgrade keeps it.
  public var startedAt: Double
  /// Upgrades (`mountctl upgrade`, SIGUSR2) since the start.
  public var upgrades: Int
  /// When the last upgrade took place (seconds since the epoch), if one did.
  public var lastUpgradeAt: Double?

  public init(
    ready: Bool, status: String, reloading: Bool, shuttingDown: Bool, configFiles: [String],
    pid: Int32, version: String = MountSupervisorRelease.identity, startedAt: Double = 0,
    upgrades: Int = 0, lastUpgradeAt: Double? = nil
  ) {
    self.ready = ready
    self.status = status
    self.reloading = reloading
    self.shuttingDown = shuttingDown
    self.configFiles = configFiles
    self.pid = pid
    self.version = version
    self.startedAt = startedAt
    self.upgrades = upgrades
    self.lastUpgradeAt = lastUpgradeAt
  }

  enum CodingKeys: String, CodingKey {
    case ready, status, reloading, pid, version, upgrades
    case shuttingDown = "shutting_down"
    case configFiles = "config_files"
    case startedAt = "started_at"
    case lastUpgradeAt = "last_upgrade_at"
  }

  /// Writes nulls explicitly instead of leaving keys out.
  public func encode(to encoder: any Encoder) throws {
    var container = encoder.container(keyedBy: CodingKeys.self)
    try container.encode(ready, forKey: .ready)
    try container.encode(status, forKey: .status)
    try container.encode(reloading, forKey: .reloading)
    try container.encode(shuttingDown, forKey: .shuttingDown)
    try container.encode(configFiles, forKey: .configFiles)
    try container.encode(pid, forKey: .pid)
    try container.encode(version, forKey: .version)
    try container.encode(startedAt, forKey: .startedAt)
    try container.encode(upgrades, forKey: .upgrades)
    try container.encode(lastUpgradeAt, forKey: .lastUpgradeAt)
  }
}

/// What an upgrade did, as the new binary reports it to the `mountctl upgrade` that asked.
public struct UpgradeResult: Codable, Sendable, Equatable {
  /// The release and commit before and after.
  public var from: String
  public var to: String
  /// From the request to the new binary serving its control socket.
  public var milliseconds: Double
  /// Mounts carried over, worker and mount untouched.
  public var mountsKept: Int

  public init(from: String, to: String, milliseconds: Double, mountsKept: Int) {
    self.from = from
    self.to = to
    self.milliseconds = milliseconds
    self.mountsKept = mountsKept
  }

  enum CodingKeys: String, CodingKey {
    case from, to, milliseconds
    case mountsKept = "mounts_kept"
  }
}

/// One mount, as `status` and the answers to `start`/`stop`/`restart`/`wait-ready` report it.
///
/// Every key is always present (null where it does not apply), so that scripts can rely on
/// the shape.
public struct MountStatus: Codable, Sendable, Equatable {
  public var name: String
  /// One of `stopped`, `starting`, `ready`, `backoff`, `stopping`, `exited`, `failed`.
  public var state: String
  /// A sentence about the state, e.g. "starting, attempt 2" or "waiting for media".
  public var detail: String
  /// The worker's pid while one runs.
  public var pid: Int32?
  /// Seconds since the mount was confirmed ready, while it is ready.
  public var uptimeSeconds: Double?
  /// Starts after the first one.
  public var restarts: Int
  public var mountpoint: String
  public var required: Bool
  /// An operator stopped it; it stays stopped until started.
  public var stoppedByOperator: Bool
  /// The most recent failure, with the worker's own words; kept after a recovery.
  public var lastError: String?
  /// The last lines the worker printed before that failure.
  public var lastErrorOutput: [String]
  /// The worker's latest `STATUS=` text.
  public var workerStatus: String?
  /// Times the mount was found hung (or aborted by an operator) and its connection aborted.
  public var hangs: Int
  /// Crashes of a kit worker that a successor resumed on the live FUSE connection, without the
  /// mount going away (counted among `restarts` too).
  public var resumes: Int
  /// Milliseconds from the last resumed crash to the successor's READY: how long accesses
  /// waited.
  public var lastResumeGapMilliseconds: Double?
  /// The supervisor holds the worker's FUSE connection: a crash will be resumed.
  public var holdsConnection: Bool

  public init(
    name: String, state: String, detail: String, pid: Int32?, uptimeSeconds: Double?, restarts: Int,
    mountpoint: String, required: Bool, stoppedByOperator: Bool, lastError: String?,
    lastErrorOutput: [String], workerStatus: String?, hangs: Int = 0, resumes: Int = 0,
    lastResumeGapMilliseconds: Double? = nil, holdsConnection: Bool = false
  ) {
    self.name = name
    self.state = state
    self.detail = detail
    self.pid = pid
    self.uptimeSeconds = uptimeSeconds
    self.restarts = restarts
    self.mountpoint = mountpoint
    self.required = required
    self.stoppedByOperator = stoppedByOperator
    self.lastError = lastError
    self.lastErrorOutput = lastErrorOutput
    self.workerStatus = workerStatus
    self.hangs = hangs
    self.resumes = resumes
    self.lastResumeGapMilliseconds = lastResumeGapMilliseconds
    self.holdsConnection = holdsConnection
  }

  /// Decodes a daemon's answer; one from before resumes existed has none.
  public init(from decoder: any Decoder) throws {
    let container = try decoder.container(keyedBy: CodingKeys.self)
    name = try container.decode(String.self, forKey: .name)
    state = try container.decode(String.self, forKey: .state)
    detail = try container.decode(String.self, forKey: .detail)
    pid = try container.decodeIfPresent(Int32.self, forKey: .pid)
    uptimeSeconds = try container.decodeIfPresent(Double.self, forKey: .uptimeSeconds)
    restarts = try container.decode(Int.self, forKey: .restarts)
    mountpoint = try container.decode(String.self, forKey: .mountpoint)
    required = try container.decode(Bool.self, forKey: .required)
    stoppedByOperator = try container.decode(Bool.self, forKey: .stoppedByOperator)
    lastError = try container.decodeIfPresent(String.self, forKey: .lastError)
    lastErrorOutput = try container.decode([String].self, forKey: .lastErrorOutput)
    workerStatus = try container.decodeIfPresent(String.self, forKey: .workerStatus)
    resumes = try container.decodeIfPresent(Int.self, forKey: .resumes) ?? 0
    lastResumeGapMilliseconds = try container.decodeIfPresent(
      Double.self, forKey: .lastResumeGapMilliseconds)
    holdsConnection = try container.decodeIfPresent(Bool.self, forKey: .holdsConnection) ?? false
    hangs = try container.decodeIfPresent(Int.self, forKey: .hangs) ?? 0
  }

  public var isReady: Bool { state == "ready" }

  enum CodingKeys: String, CodingKey {
    case name, state, detail, pid, restarts, mountpoint, required, hangs
    case uptimeSeconds = "uptime_seconds"
    case stoppedByOperator = "stopped_by_operator"
    case lastError = "last_error"
    case lastErrorOutput = "last_error_output"
    case workerStatus = "worker_status"
    case resumes
    case lastResumeGapMilliseconds = "last_resume_gap_ms"
    case holdsConnection = "holds_connection"
  }

  /// Writes nulls explicitly instead of leaving keys out.
  public func encode(to encoder: any Encoder) throws {
    var container = encoder.container(keyedBy: CodingKeys.self)
    try container.encode(name, forKey: .name)
    try container.encode(state, forKey: .state)
    try container.encode(detail, forKey: .detail)
    try container.encode(pid, forKey: .pid)
    try container.encode(uptimeSeconds, forKey: .uptimeSeconds)
    try container.encode(restarts, forKey: .restarts)
    try container.encode(mountpoint, forKey: .mountpoint)
    try container.encode(required, forKey: .required)
    try container.encode(stoppedByOperator, forKey: .stoppedByOperator)
    try container.encode(lastError, forKey: .lastError)
    try container.encode(lastErrorOutput, forKey: .lastErrorOutput)
    try container.encode(workerStatus, forKey: .workerStatus)
    try container.encode(hangs, forKey: .hangs)
    try container.encode(resumes, forKey: .resumes)
    try container.encode(lastResumeGapMilliseconds, forKey: .lastResumeGapMilliseconds)
    try container.encode(holdsConnection, forKey: .holdsConnection)
  }
}

/// What a reload changed, by mount name.
public struct ReloadResult: Codable, Sendable, Equatable {
  public var added: [String]
  public var removed: [String]
  /// Restarted because a field that affects the worker changed.
  public var changed: [String]
  /// Left alone: same worker, same pid, never remounted.
  public var unchanged: [String]

  public init(added: [String], removed: [String], changed: [String], unchanged: [String]) {
    self.added = added
    self.removed = removed
    self.changed = changed
    self.unchanged = unchanged
  }
}
