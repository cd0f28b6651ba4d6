extension MountSpec {
  /// Every key a `[mounts.NAME]` table may hold (design notes §3 plus `probe_path`).
  static let knownKeys = [
    "mountpoint", "command", "readiness", "probe_path", "restart", "required", "start_timeout",
    "stop_timeout", "restart_delay", "restart_delay_max", "start_limit_burst",
    "start_limit_interval", "user", "group", "environment",
  ]

  /// Environment names the supervisor sets for each worker; a mount may not override them.
  static func isReservedEnvironmentName(_ name: String) -> Bool {
    name.hasPrefix("MOUNTSUP_") || name == "NOTIFY_SOCKET"
  }

  /// Validates one `[mounts.NAME]` table and resolves it: defaults filled in, the mountpoint
  /// normalised, `{mountpoint}` and `{name}` substituted.
  init(name: String, reading table: TableReader, context: LoadContext) throws(ConfigError) {
    try table.rejectUnknownKeys(Self.knownKeys)
    self.init(name: name, mountpoint: "", command: [], sourceFile: table.file)

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
    switch context.resolver.resolve(written) {
    case .success(let resolved):
      self.mountpoint = resolved
      if resolved != written { mountpointAsWritten = written }
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
    let placeholders = ["mountpoint": self.mountpoint, "name": name]

    guard let command = try table.stringArray("command") else {
      throw table.error(
        .missingKey, key: "command",
        "required key is missing (the worker's argv, e.g."
          + " [\"mountsup-mirror\", \"/srv/data\", \"{mountpoint}\"])")
    }
    guard let program = command.first else {
      throw table.error(.emptyCommand, key: "command", "is empty; give at least the program to run")
    }
    guard !program.isEmpty else {
      throw table.error(.emptyCommand, key: "command", "command[0], the program to run, is empty")
    }
    self.command = command.map { substitutePlaceholders(in: $0, placeholders) }

    if let readiness = try table.oneOf("readiness", ReadinessMode.self) {
      self.readiness = readiness
    }
    if let probePath = try table.string("probe_path") {
      guard readiness == .probe else {
        throw table.error(
          .invalidValue, key: "probe_path",
          "only used with readiness = \"probe\", but this mount has readiness = "
            + tomlQuoted(readiness.rawValue))
      }
      switch normalizedPath(probePath, absolute: false) {
      case .success(let path): self.probePath = path
      case .failure(let problem):
        throw table.error(.invalidPath, key: "probe_path", problem.message)
      }
    }
    if let restart = try table.oneOf("restart", RestartPolicy.self) { self.restart = restart }
    if let required = try table.bool("required") { self.required = required }
    if let timeout = try table.duration("start_timeout") { startTimeout = timeout }
    if let timeout = try table.duration("stop_timeout") { stopTimeout = timeout }
    if let delay = try table.duration("restart_delay", allowZero: true) { restartDelay = delay }
    if let delay = try table.duration("restart_delay_max") { restartDelayMax = delay }
    guard restartDelayMax >= restartDelay else {
      throw table.error(
        .invalidDuration, key: "restart_delay_max",
        "\(formatDuration(restartDelayMax)) is shorter than restart_delay"
          + " (\(formatDuration(restartDelay))); the delay only grows up to this")
    }
    if let burst = try table.int("start_limit_burst") {
      guard burst >= 1 else {
        throw table.error(
          .invalidValue, key: "start_limit_burst", "must be at least 1, found \(burst)")
      }
      startLimitBurst = burst
    }
    if let interval = try table.duration("start_limit_interval") { startLimitInterval = interval }

    if let user = try table.string("user") {
      guard SystemAccess.userExists(user) else {
        throw table.error(
          .unknownAccount, key: "user",
          "no user \(tomlQuoted(user)) exists on this machine (getpwnam)")
      }
      self.user = user
    }
    if let group = try table.string("group") {
      guard SystemAccess.groupExists(group) else {
        throw table.error(
          .unknownAccount, key: "group",
          "no group \(tomlQuoted(group)) exists on this machine (getgrnam)")
      }
      self.group = group
    }

    if let environment = try table.table("environment") {
      for variable in environment.keys {
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
          self.environment[variable] = substitutePlaceholders(in: value, placeholders)
        }
      }
    }
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
