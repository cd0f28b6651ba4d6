extension MountSpec {
  /// Every key a `[mounts.NAME]` table may hold (see mounts.toml(5)).
  static let knownKeys = [
    "mountpoint", "command", "readiness", "probe_path", "restart", "required", "start_timeout",
    "stop_timeout", "restart_delay", "restart_delay_max", "start_limit_burst",
    "start_limit_interval", "hang_timeout", "user", "group", "environment",
  ]

  /// Environment names the supervisor sets for each worker; a mount may not override them.
  static func isReservedEnvironmentName(_ name: String) -> Bool {
    name.hasPrefix("MOUNTSUP_") || name == "NOTIFY_SOCKET"
  }

  /// One mount table as decoded: the spec is usable only when `isValid`; its mountpoint is
  /// known (for the duplicate check) when `hasMountpoint`, even if another key was wrong.
  struct Decoded {
    var spec: MountSpec
    var isValid: Bool
    var hasMountpoint: Bool
    /// Its command is known (for the lookup of its program), even if another key was wrong.
    var hasCommand: Bool
  }

  /// Validates one `[mounts.NAME]` table and resolves it: defaults filled in, the mountpoint
  /// normalised and resolved, `{mountpoint}` and `{name}` substituted. Every mistake goes to
  /// `diagnostics`, one per key.
  static func decode(
    name: String, reading table: TableReader, context: LoadContext,
    diagnostics: inout Diagnostics
  ) -> Decoded {
    let errorsBefore = diagnostics.errors.count
    diagnostics.errors += table.unknownKeyErrors(Self.knownKeys)
    var spec = MountSpec(name: name, mountpoint: "", command: [], sourceFile: table.file)

    var hasMountpoint = false
    if let (resolved, written) = diagnostics.check({ () throws(ConfigError) in
      try decodeMountpoint(table, context: context)
    }) {
      spec.mountpoint = resolved
      if resolved != written { spec.mountpointAsWritten = written }
      hasMountpoint = true
    }
    let placeholders = ["mountpoint": spec.mountpoint, "name": name]

    diagnostics.check { () throws(ConfigError) in
      guard let command = try table.stringArray("command") else {
        throw table.error(
          .missingKey, key: "command",
          "required key is missing (the worker's argv, e.g."
            + " [\"mountsup-mirror\", \"/srv/data\", \"{mountpoint}\"])")
      }
      guard let program = command.first else {
        throw table.error(
          .emptyCommand, key: "command", "is empty; give at least the program to run")
      }
      guard !program.isEmpty else {
        throw table.error(.emptyCommand, key: "command", "command[0], the program to run, is empty")
      }
      spec.command = command.map { substitutePlaceholders(in: $0, placeholders) }
    }

    let readiness = diagnostics.check { () throws(ConfigError) in
      try table.oneOf("readiness", ReadinessMode.self)
    }
    if let readiness { spec.readiness = readiness ?? spec.readiness }
    diagnostics.check { () throws(ConfigError) in
      guard let probePath = try table.string("probe_path") else { return }
      // With an invalid readiness, whether probe_path belongs is unknown: not a second error.
      guard spec.readiness == .probe || readiness == nil else {
        throw table.error(
          .invalidValue, key: "probe_path",
          "only used with readiness = \"probe\", but this mount has readiness = "
            + tomlQuoted(spec.readiness.rawValue))
      }
      switch normalizedPath(probePath, absolute: false) {
      case .success(let path): spec.probePath = path
      case .failure(let problem):
        throw table.error(.invalidPath, key: "probe_path", problem.message)
      }
    }
    diagnostics.check { () throws(ConfigError) in
      if let restart = try table.oneOf("restart", RestartPolicy.self) { spec.restart = restart }
    }
    diagnostics.check { () throws(ConfigError) in
      if let required = try table.bool("required") { spec.required = required }
    }
    diagnostics.check { () throws(ConfigError) in
      if let timeout = try table.duration("start_timeout") { spec.startTimeout = timeout }
    }
    diagnostics.check { () throws(ConfigError) in
      if let timeout = try table.duration("stop_timeout") { spec.stopTimeout = timeout }
    }
    diagnostics.check { () throws(ConfigError) in
      if let timeout = try table.duration("hang_timeout", allowZero: true) {
        spec.hangTimeout = timeout
      }
    }
    let delay: ()? = diagnostics.check { () throws(ConfigError) in
      if let delay = try table.duration("restart_delay", allowZero: true) {
        spec.restartDelay = delay
      }
    }
    let delayMax: ()? = diagnostics.check { () throws(ConfigError) in
      if let delay = try table.duration("restart_delay_max") { spec.restartDelayMax = delay }
    }
    if delay != nil, delayMax != nil, spec.restartDelayMax < spec.restartDelay {
      diagnostics.errors.append(
        table.error(
          .invalidDuration, key: "restart_delay_max",
          "\(formatDuration(spec.restartDelayMax)) is shorter than restart_delay"
            + " (\(formatDuration(spec.restartDelay))); the delay only grows up to this"))
    }
    diagnostics.check { () throws(ConfigError) in
      guard let burst = try table.int("start_limit_burst") else { return }
      guard burst >= 1 else {
        throw table.error(
          .invalidValue, key: "start_limit_burst", "must be at least 1, found \(burst)")
      }
      spec.startLimitBurst = burst
    }
    diagnostics.check { () throws(ConfigError) in
      if let interval = try table.duration("start_limit_interval") {
        spec.startLimitInterval = interval
      }
    }

    diagnostics.check { () throws(ConfigError) in
      guard let user = try table.string("user") else { return }
      guard SystemAccess.userExists(user) else {
        throw table.error(
          .unknownAccount, key: "user",
          "no user \(tomlQuoted(user)) exists on this machine (getpwnam)")
      }
      spec.user = user
    }
    diagnostics.check { () throws(ConfigError) in
      guard let group = try table.string("group") else { return }
      guard SystemAccess.groupExists(group) else {
        throw table.error(
          .unknownAccount, key: "group",
          "no group \(tomlQuoted(group)) exists on this machine (getgrnam)")
      }
      spec.group = group
    }

    if let environment = diagnostics.check({ () throws(ConfigError) in
      try table.table("environment")
    }) ?? nil {
      for variable in environment.keys {
        diagnostics.check { () throws(ConfigError) in
          if NulEscapes.containsNul(variable) {
            throw environment.nulError(variable, "the variable name")
          }
          if variable.isEmpty || variable.contains("=") {
            throw environment.error(
              .invalidValue, key: variable,
              "\(tomlQuoted(variable)) is not a valid environment variable name"
                + " (it must be non-empty and contain no \"=\")")
          }
          if Self.isReservedEnvironmentName(variable) {
            throw environment.error(
              .invalidValue, key: variable,
              "is set by the supervisor for every worker (MOUNTSUP_*, NOTIFY_SOCKET)"
                + " and cannot be configured")
          }
          if let value = try environment.string(variable) {
            spec.environment[variable] = substitutePlaceholders(in: value, placeholders)
          }
        }
      }
    }
    return Decoded(
      spec: spec, isValid: diagnostics.errors.count == errorsBefore, hasMountpoint: hasMountpoint,
      hasCommand: !spec.command.isEmpty)
  }

  /// The mountpoint, normalised, then resolved through symlinks (see ``MountpointResolver``),
  /// and never `/`, nor in `/proc`, `/sys` or `/dev`: (resolved, as written).
  private static func decodeMountpoint(_ table: TableReader, context: LoadContext)
    throws(ConfigError) -> (String, String)
  {
    guard let mountpoint = try table.string("mountpoint") else {
      throw table.error(
        .missingKey, key: "mountpoint", "required key is missing (the absolute path to mount on)")
    }
    let written: String
    switch normalizedPath(mountpoint, absolute: true) {
    case .success("/"):
      throw table.error(.invalidPath, key: "mountpoint", "\"/\" cannot be a mountpoint")
    case .success(let path): written = path
    case .failure(let problem): throw table.error(.invalidPath, key: "mountpoint", problem.message)
    }
    let resolved: String
    switch context.resolver.resolve(written) {
    case .success(let path):
      resolved = path
    case .failure(.symlinkLoop):
      throw table.error(
        .invalidPath, key: "mountpoint",
        "\(tomlQuoted(written)) cannot be resolved: too many levels of symbolic links")
    case .failure(.notADirectory(let path, let kind, isMountpoint: true)):
      throw table.error(
        .invalidPath, key: "mountpoint",
        "\(tomlQuoted(written))\(path == written ? "" : " (resolved: \(tomlQuoted(path)))") is "
          + "\(kind), not a directory; a mountpoint must be a directory (it is created when "
          + "missing)")
    case .failure(.notADirectory(let path, let kind, isMountpoint: false)):
      throw table.error(
        .invalidPath, key: "mountpoint",
        "\(tomlQuoted(written)) lies under \(tomlQuoted(path)), which is \(kind), not a directory")
    }
    let through = resolved == written ? "" : " (through symlinks: \(tomlQuoted(resolved)))"
    if resolved == "/" {
      throw table.error(
        .invalidPath, key: "mountpoint",
        "\(tomlQuoted(written)) is \"/\"\(through), which cannot be a mountpoint")
    }
    if let area = ConfigLoader.kernelDirectories.first(where: {
      resolved == $0 || resolved.hasPrefix($0 + "/")
    }) {
      throw table.error(
        .invalidPath, key: "mountpoint",
        "\(tomlQuoted(written)) lies in \(area)\(through), which belongs to the kernel (/proc, "
          + "/sys and /dev are no place for a FUSE mount); use a directory such as /mnt/NAME")
    }
    return (resolved, written)
  }
}

/// Whether a mount name can go into logs, `mountctl` arguments and file names as it is:
/// `[A-Za-z0-9][A-Za-z0-9_.@-]*`.
func isValidMountName(_ name: String) -> Bool {
  guard let first = name.unicodeScalars.first, isASCIIAlphanumeric(first) else { return false }
  return name.unicodeScalars.allSatisfy {
    isASCIIAlphanumeric($0) || "_.@-".unicodeScalars.contains($0)
  }
}

private func isASCIIAlphanumeric(_ scalar: Unicode.Scalar) -> Bool {
  switch scalar {
  case "A"..."Z", "a"..."z", "0"..."9": true
  default: false
  }
}

/// Replaces `{key}` by its value in one pass, so a value that itself contains `{name}` stays as
/// it is.
func substitutePlaceholders(in text: String, _ values: [String: String]) -> String {
  var result = ""
  var rest = Substring(text)
  while let brace = rest.firstIndex(of: "{") {
    result += rest[..<brace]
    rest = rest[brace...]
    if let (key, value) = values.first(where: { rest.hasPrefix("{\($0.key)}") }) {
      result += value
      rest = rest.dropFirst(key.count + 2)
    } else {
      result += "{"
      rest = rest.dropFirst()
    }
  }
  return result + rest
}

struct PathProblem: Error {
  let message: String
}

/// Lexically normalises a path: no empty (`//`) or `.` components, no trailing slash. `..` is
/// rejected rather than resolved, because resolving it lexically could name a different directory
/// than the kernel would through a symlink. A relative path that normalises to nothing is `"."`.
func normalizedPath(_ path: String, absolute: Bool) -> Result<String, PathProblem> {
  guard !path.isEmpty else { return .failure(PathProblem(message: "must not be empty")) }
  if absolute != path.hasPrefix("/") {
    let message =
      absolute
      ? "\(tomlQuoted(path)) is relative; use an absolute path (starting with \"/\")"
      : "\(tomlQuoted(path)) is absolute; use a path relative to the mountpoint"
    return .failure(PathProblem(message: message))
  }
  let components = path.split(separator: "/").filter { $0 != "." }
  guard !components.contains("..") else {
    return .failure(PathProblem(message: "\(tomlQuoted(path)) must not contain \"..\""))
  }
  if absolute { return .success("/" + components.joined(separator: "/")) }
  return .success(components.isEmpty ? "." : components.joined(separator: "/"))
}
