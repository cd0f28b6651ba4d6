import Glibc

/// How the supervisor learns that a worker's FUSE filesystem is initialised.
///
/// Every mode also requires a new FUSE mount at the mountpoint in `/proc/self/mountinfo`;
/// a worker's word alone never confirms a mount.
public enum ReadinessMode: String, Sendable, Equatable, CaseIterable, Codable {
  /// `READY=1` (or a bare newline) on the socketpair handed over as `MOUNTSUP_NOTIFY_FD`.
  case `protocol`
  /// `READY=1` through a per-worker `NOTIFY_SOCKET` (sd_notify), as rclone sends it.
  case notify
  /// The worker says nothing; a statfs (and optionally `probe_path`) that reaches the daemon decides.
  case probe
}

/// When a worker that has exited is started again.
public enum RestartPolicy: String, Sendable, Equatable, CaseIterable, Codable {
  case always
  case onFailure = "on-failure"
  case never
}

/// One mount as resolved from the configuration: every default filled in, every path absolute,
/// `{mountpoint}` and `{name}` substituted in `command`.
public struct MountSpec: Sendable, Equatable, Codable {
  /// The table key under `[mounts]`; names the mount in logs, status and `mountctl`.
  public var name: String
  /// Absolute, normalised (no trailing slash, no `.`/`..` components), and resolved through the
  /// symlinks of its existing part: the path at which mountinfo shows the mount.
  public var mountpoint: String
  /// The mountpoint as the configuration wrote it (normalised), when resolving symlinks changed
  /// it; nil when it is ``mountpoint``. For messages only.
  public var mountpointAsWritten: String?
  /// The worker's argv; `command[0]` is resolved through `PATH` at spawn time.
  public var command: [String]
  public var readiness: ReadinessMode
  /// With `readiness = "probe"`: a path inside the mount (relative to it) that must stat and list.
  public var probePath: String?
  public var restart: RestartPolicy
  /// A required mount that cannot start fails the whole service; an optional one only itself.
  public var required: Bool
  public var startTimeout: Duration
  public var stopTimeout: Duration
  public var restartDelay: Duration
  public var restartDelayMax: Duration
  public var startLimitBurst: Int
  public var startLimitInterval: Duration
  /// A ready mount whose server leaves a request unanswered this long is hung: its connection is
  /// aborted and the worker restarted; zero turns the check off.
  public var hangTimeout: Duration
  public var user: String?
  public var group: String?
  public var environment: [String: String]
  /// The file that defined this mount, for messages.
  public var sourceFile: String

  public init(
    name: String, mountpoint: String, command: [String],
    readiness: ReadinessMode = .protocol, probePath: String? = nil,
    restart: RestartPolicy = .onFailure, required: Bool = true,
    startTimeout: Duration = .seconds(10), stopTimeout: Duration = .seconds(10),
    restartDelay: Duration = .milliseconds(100), restartDelayMax: Duration = .seconds(30),
    startLimitBurst: Int = 5, startLimitInterval: Duration = .seconds(60),
    hangTimeout: Duration = MountSpec.defaultHangTimeout,
    user: String? = nil, group: String? = nil, environment: [String: String] = [:],
    sourceFile: String = "", mountpointAsWritten: String? = nil
  ) {
    self.name = name
    self.mountpoint = mountpoint
    self.mountpointAsWritten = mountpointAsWritten
    self.command = command
    self.readiness = readiness
    self.probePath = probePath
    self.restart = restart
    self.required = required
    self.startTimeout = startTimeout
    self.stopTimeout = stopTimeout
    self.restartDelay = restartDelay
    self.restartDelayMax = restartDelayMax
    self.startLimitBurst = startLimitBurst
    self.startLimitInterval = startLimitInterval
    self.hangTimeout = hangTimeout
    self.user = user
    self.group = group
    self.environment = environment
    self.sourceFile = sourceFile
  }

  /// Longer than any healthy network file system leaves one request waiting (sshfs and rclone
  /// reconnect well within it), short enough that blocked processes do not pile up for long.
  public static let defaultHangTimeout: Duration = .seconds(60)

  /// True when a running worker must be restarted for this spec to take effect
  /// (everything but `sourceFile` and the restart-policy knobs that only matter after an exit).
  public func requiresRestart(comparedTo other: MountSpec) -> Bool {
    mountpoint != other.mountpoint || command != other.command || readiness != other.readiness
      || probePath != other.probePath || user != other.user || group != other.group
      || environment != other.environment
  }
}

/// The `[supervisor]` table.
public struct SupervisorSettings: Sendable, Equatable, Codable {
  public static let defaultControlSocket = "/run/mountsup/control.sock"

  public var controlSocket: String
  /// Members may do everything through the control socket.
  public var adminGroup: String?
  /// Members may read status, logs and metrics and wait for readiness.
  public var statusGroup: String?
  /// Where the metrics are kept for node_exporter's textfile collector: rewritten (atomically,
  /// by rename) only when something they show changed, so an idle supervisor stays idle.
  public var metricsFile: String?
  /// Where the metrics are served over HTTP (`GET /metrics`), from the supervisor's own loop.
  public var metricsListen: ListenAddress?
  /// Watch the configuration files (inotify) and reload when one changes, as SIGHUP would.
  public var watchConfig: Bool

  public init(
    controlSocket: String = SupervisorSettings.defaultControlSocket,
    adminGroup: String? = nil, statusGroup: String? = nil, metricsFile: String? = nil,
    metricsListen: ListenAddress? = nil, watchConfig: Bool = false
  ) {
    self.controlSocket = controlSocket
    self.adminGroup = adminGroup
    self.statusGroup = statusGroup
    self.metricsFile = metricsFile
    self.metricsListen = metricsListen
    self.watchConfig = watchConfig
  }
}

/// An IP address and a TCP port, as `[supervisor] metrics_listen` gives them: `127.0.0.1:9464`
/// or `[::1]:9464`. Only numeric addresses: the daemon never waits for a name lookup.
public struct ListenAddress: Sendable, Equatable, Codable, CustomStringConvertible {
  /// The address without brackets, e.g. `127.0.0.1` or `::1`.
  public var host: String
  public var port: UInt16
  public var isIPv6: Bool { host.contains(":") }

  /// Parses `ADDRESS:PORT`, with an IPv6 address in brackets; nil if it is not one.
  public init?(_ text: String) {
    guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]),
      port > 0
    else { return nil }
    var host = String(text[..<colon])
    if host.hasPrefix("[") && host.hasSuffix("]") {
      host = String(host.dropFirst().dropLast())
      guard host.contains(":") else { return nil }
    } else if host.contains(":") {
      return nil
    }
    var buffer = [UInt8](repeating: 0, count: 16)
    let family = host.contains(":") ? AF_INET6 : AF_INET
    guard inet_pton(family, host, &buffer) == 1 else { return nil }
    self.host = host
    self.port = port
  }

  public var description: String { isIPv6 ? "[\(host)]:\(port)" : "\(host):\(port)" }
}

/// A whole, validated configuration: the main file and every included drop-in.
public struct Configuration: Sendable, Equatable {
  public static let defaultPath = "/etc/mountsup/mounts.toml"

  public var supervisor: SupervisorSettings
  /// Sorted by name.
  public var mounts: [MountSpec]
  /// The files the configuration comes from: the main file, then the drop-ins that define
  /// mounts, in reading order.
  public var files: [String]
  /// Drop-ins that were read but define no mount (only comments, such as a disabled example):
  /// not sources of mounts, so not in ``files``.
  public var dropInsWithoutMounts: [String]
  /// The directories that `include` patterns look in (those without a wildcard in the
  /// directory part): where a new drop-in may appear, for `watch_config`.
  public var includeDirectories: [String]
  /// What looked wrong but is not certain to fail (see ``ConfigWarning``): for the log and for
  /// `mountsupd --check-config`.
  public var warnings: [ConfigWarning]

  public init(
    supervisor: SupervisorSettings, mounts: [MountSpec], files: [String],
    dropInsWithoutMounts: [String] = [], includeDirectories: [String] = [],
    warnings: [ConfigWarning] = []
  ) {
    self.supervisor = supervisor
    self.mounts = mounts
    self.files = files
    self.dropInsWithoutMounts = dropInsWithoutMounts
    self.includeDirectories = includeDirectories
    self.warnings = warnings
  }

  /// "1 mount from FILE" or "3 mounts from FILE, FILE": for a log line about what starts.
  public var summary: String {
    "\(counted(mounts.count, "mount")) from \(files.joined(separator: ", "))"
  }
}

/// "1 mount", "2 mounts", "no mounts": a count with its noun in the right number.
public func counted(_ count: Int, _ noun: String, plural: String? = nil) -> String {
  switch count {
  case 0: "no \(plural ?? noun + "s")"
  case 1: "1 \(noun)"
  default: "\(count) \(plural ?? noun + "s")"
  }
}
