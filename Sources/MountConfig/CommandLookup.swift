import Glibc

/// Finds a worker's program the way `mountsupd` runs it: a `command[0]` with a slash is used as
/// it is; one without is looked up in the daemon's `PATH` (the default search path when `PATH` is
/// unset), then in the directory of the daemon's own executable, where `mountsup-mirror` is
/// installed beside it.
///
/// One lookup for the configuration check (`mountsupd --check-config`, and the warnings at start
/// and reload) and, when it adopts it, for the runtime's spawn, so that the check passes exactly
/// what the spawn finds.
public struct CommandLookup: Sendable, Equatable {
  /// The directories searched for a program without a slash, in order.
  public var searchPath: [String]

  public init(searchPath: [String]) {
    self.searchPath = searchPath
  }

  /// The search path when `PATH` is not set.
  public static let defaultSearchPath = [
    "/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin",
  ]

  /// The daemon's lookup: `path` (by default this process's `PATH`, else ``defaultSearchPath``)
  /// split at `:` without empty entries, then the directory of this executable.
  public static func daemon(
    path: String? = getenv("PATH").map { String(cString: $0) },
    executableDirectory: String? = CommandLookup.executableDirectory()
  ) -> CommandLookup {
    let directories = path.map { $0.split(separator: ":").map(String.init) } ?? defaultSearchPath
    let own = executableDirectory.map { [$0] } ?? []
    return CommandLookup(searchPath: directories + own.filter { !directories.contains($0) })
  }

  /// The directory of this process's executable (`/proc/self/exe`); nil when unknown.
  public static func executableDirectory() -> String? {
    guard let path = symlinkTarget("/proc/self/exe"), path.hasPrefix("/") else {
      return nil
    }
    let parent = directoryName(of: path)
    return parent
  }

  /// Why a program cannot be run.
  public enum Failure: Error, Equatable, Sendable, CustomStringConvertible {
    /// A program without a slash that is in none of `searched`.
    case notFound(command: String, searched: [String])
    /// A path (given, or found on the search path) that exists but cannot be executed: a
    /// directory, a file without execute permission.
    case notExecutable(path: String, reason: String)
    /// A path with a slash that does not exist (or cannot be looked at: `reason`).
    case missing(path: String, reason: String)

    public var description: String {
      switch self {
      case .notFound(let command, let searched):
        "\(tomlQuoted(command)) is not found in \(searched.joined(separator: ":")); install it "
          + "or give its absolute path"
      case .notExecutable(let path, let reason):
        "\(tomlQuoted(path)) is not executable (\(reason))"
      case .missing(let path, let reason):
        "\(tomlQuoted(path)) \(reason)"
      }
    }
  }

  /// The path that would be executed for `command`.
  public func resolve(_ command: String) -> Result<String, Failure> {
    switch check(command, avoiding: { _ in false }) {
    case .found(let path): .success(path)
    case .failed(let failure): .failure(failure)
    case .unknown: .failure(.notFound(command: command, searched: searchPath))
    }
  }

  enum Outcome: Equatable {
    case found(String)
    case failed(Failure)
    /// The answer lies where it must not be looked for (inside a FUSE mount).
    case unknown
  }

  /// ``resolve(_:)`` that never looks at a path for which `avoid` is true (one inside a FUSE
  /// mount, which could hang the caller): what would have been decided there is `unknown`.
  func check(_ command: String, avoiding avoid: (String) -> Bool) -> Outcome {
    if command.contains("/") {
      guard !avoid(command) else { return .unknown }
      return Self.executable(command)
    }
    var skipped = false
    var notExecutable: Failure?
    for directory in searchPath where !directory.isEmpty {
      let candidate = directory.hasSuffix("/") ? directory + command : directory + "/" + command
      if avoid(candidate) {
        skipped = true
        continue
      }
      switch Self.executable(candidate) {
      case .found(let path): return .found(path)
      case .failed(let failure):
        // The shell goes on to the next directory; remember why this one did not do.
        if case .notExecutable = failure, notExecutable == nil { notExecutable = failure }
      case .unknown: break
      }
    }
    if skipped { return .unknown }
    if let notExecutable { return .failed(notExecutable) }
    return .failed(.notFound(command: command, searched: searchPath))
  }

  /// Whether `path` is an executable regular file for this process (as `execve` decides for it).
  private static func executable(_ path: String) -> Outcome {
    var info = stat()
    guard stat(path, &info) == 0 else {
      let code = errno
      return .failed(
        .missing(
          path: path,
          reason: code == ENOENT
            ? "does not exist" : "cannot be looked at: \(String(cString: strerror(code)))"))
    }
    if let kind = SystemAccess.nonRegularKind(info.st_mode) {
      return .failed(.notExecutable(path: path, reason: "it is \(kind)"))
    }
    guard access(path, X_OK) == 0 else {
      let mode = String(info.st_mode & 0o7777, radix: 8)
      return .failed(
        .notExecutable(
          path: path, reason: "mode \(String(repeating: "0", count: max(0, 4 - mode.count)))\(mode)"
        ))
    }
    return .found(path)
  }
}
