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
    // Every type of this protocol encodes only strings, finite numbers, booleans, arrays and
    // nulls.
    var line = try! JSONLine.encode(value)
    line.append(UInt8(ascii: "\n"))
    return line
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
