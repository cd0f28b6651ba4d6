/// How strictly a load checks what only the machine can tell.
public struct LoadOptions: Sendable {
  /// Whether a `command[0]` that is not found or not executable now is an error (as
  /// `mountsupd --check-config` has it) or a warning (at start and reload: the program may be
  /// installed, or the mount that holds it mounted, before the mount starts; it then fails with
  /// the runtime's message if it is still missing).
  public var missingCommandsAreErrors: Bool
  /// Where a program without a slash is looked for: the daemon's search path by default.
  public var commandLookup: CommandLookup

  public init(missingCommandsAreErrors: Bool = false, commandLookup: CommandLookup = .daemon()) {
    self.missingCommandsAreErrors = missingCommandsAreErrors
    self.commandLookup = commandLookup
  }

  /// For `mountsupd --check-config`: whatever is certain to fail now is an error.
  public static func check() -> LoadOptions { LoadOptions(missingCommandsAreErrors: true) }
}

/// Reads and validates the supervisor's configuration: the main TOML file plus the drop-ins its
/// `[supervisor] include` globs name.
///
/// Everything is checked before anything is returned, so a configuration either is used whole or
/// not at all: at start an ``InvalidConfiguration`` means exit non-zero, at reload it means
/// change nothing. Every error is reported, not only the first: a mistake in one key, mount or
/// file does not stop the others from being checked.
public enum ConfigLoader {
  /// Keys of the `[supervisor]` table.
  static let supervisorKeys = [
    "control_socket", "include", "admin_group", "status_group", "metrics_file", "metrics_listen",
    "watch_config",
  ]

  /// The largest configuration file (main file or drop-in) that is read: 1 MiB, far more than
  /// any list of mounts needs, and small enough to read at once on the event loop.
  public static let maximumFileSize = 1 << 20

  /// Directories of the kernel's own filesystems where no mount belongs.
  static let kernelDirectories = ["/proc", "/sys", "/dev"]

  /// Loads the main file at `path` (made absolute against the working directory) and its includes.
  public static func load(
    path: String = Configuration.defaultPath, options: LoadOptions = LoadOptions()
  ) throws(InvalidConfiguration) -> Configuration {
    let file = absoluteFilePath(path)
    let text: String
    do {
      text = try readFile(file, notFound: "the file does not exist")
    } catch {
      throw InvalidConfiguration(errors: [error])
    }
    return try parse(toml: text, file: file, options: options)
  }

  /// The text of a configuration file: a regular file of at most ``maximumFileSize`` bytes.
  static func readFile(
    _ file: String, notFound: String, notFoundCode: ConfigError.Code = .fileNotFound
  ) throws(ConfigError) -> String {
    switch SystemAccess.readTextFile(file, limit: maximumFileSize) {
    case .success(let text):
      return text
    case .failure(.notFound):
      throw ConfigError(code: notFoundCode, file: file, message: notFound)
    case .failure(.notRegular(let kind)):
      throw ConfigError(
        code: .notRegularFile, file: file,
        message: "is \(kind), not a regular file; only regular files are read as configuration")
    case .failure(.tooLarge(let size)):
      throw ConfigError(
        code: .fileTooLarge, file: file,
        message: "is too large (\(size) bytes; a configuration file may have at most "
          + "\(maximumFileSize) bytes, 1 MiB)")
    case .failure(.failed(let reason)):
      throw ConfigError(
        code: .unreadableFile, file: file, message: "cannot read the file: \(reason)")
    }
  }

  /// Validates a main file given as text; `file` is only used in messages and `files`.
  ///
  /// Includes are still read from disk, relative to `baseDirectory` (by default the directory of
  /// `file`), so tests can feed a string and drop-ins from a temporary directory.
  public static func parse(
    toml: String, file: String, baseDirectory: String? = nil,
    options: LoadOptions = LoadOptions()
  ) throws(InvalidConfiguration) -> Configuration {
    try parse(
      toml: toml, file: file, baseDirectory: baseDirectory,
      context: .current(options: options))
  }

  /// The same with what the machine looks like given (tests give FUSE mountpoints).
  static func parse(toml: String, file: String, baseDirectory: String?, context: LoadContext)
    throws(InvalidConfiguration) -> Configuration
  {
    let file = cleanedFilePath(file)
    var diagnostics = Diagnostics()
    let root: TableReader
    do {
      root = TableReader(try parseTOML(toml, file: file), file: file)
    } catch {
      // Nothing of a file that does not parse can be checked.
      throw InvalidConfiguration(errors: [error])
    }
    diagnostics.errors += root.unknownKeyErrors(["supervisor", "mounts"])

    var supervisor = SupervisorSettings()
    var includes: [String] = []
    if let section = diagnostics.check({ () throws(ConfigError) in try root.table("supervisor") })
      ?? nil
    {
      diagnostics.errors += section.unknownKeyErrors(supervisorKeys)
      diagnostics.check { () throws(ConfigError) in
        guard let socket = try section.string("control_socket") else { return }
        switch normalizedPath(socket, absolute: true) {
        case .success("/"):
          throw section.error(.invalidPath, key: "control_socket", "\"/\" cannot be a socket")
        case .success(let path): supervisor.controlSocket = path
        case .failure(let problem):
          throw section.error(.invalidPath, key: "control_socket", problem.message)
        }
      }
      supervisor.adminGroup =
        diagnostics.check { () throws(ConfigError) in try existingGroup(section, "admin_group") }
        ?? nil
      supervisor.statusGroup =
        diagnostics.check { () throws(ConfigError) in try existingGroup(section, "status_group") }
        ?? nil
      diagnostics.check { () throws(ConfigError) in
        guard let file = try section.string("metrics_file") else { return }
        switch normalizedPath(file, absolute: true) {
        case .success("/"):
          throw section.error(.invalidPath, key: "metrics_file", "\"/\" cannot be a file")
        case .success(let path): supervisor.metricsFile = path
        case .failure(let problem):
          throw section.error(.invalidPath, key: "metrics_file", problem.message)
        }
      }
      diagnostics.check { () throws(ConfigError) in
        guard let text = try section.string("metrics_listen") else { return }
        guard let address = ListenAddress(text) else {
          throw section.error(
            .invalidValue, key: "metrics_listen",
            "\"\(text)\" is not an address and port such as \"127.0.0.1:9464\" or \"[::1]:9464\" "
              + "(an IP address, not a host name; port 1 to 65535)")
        }
        supervisor.metricsListen = address
      }
      supervisor.watchConfig =
        (diagnostics.check { () throws(ConfigError) in try section.bool("watch_config") } ?? nil)
        ?? false
      includes =
        diagnostics.check { () throws(ConfigError) in try section.stringArray("include") ?? [] }
        ?? []
      if includes.contains("") {
        diagnostics.errors.append(
          section.error(.invalidValue, key: "include", "an include pattern must not be empty"))
        includes.removeAll { $0.isEmpty }
      }
    }

    var collector = MountCollector(context: context)
    collector.add(mountsOf: root, &diagnostics)
    var files = [file]
    let directory = baseDirectory ?? directoryName(of: file)
    var includeDirectories: [String] = []
    for pattern in includes {
      // Where a new drop-in of this pattern would appear, when that is one directory.
      let patternDirectory = cleanedFilePath(
        directoryName(of: pattern.hasPrefix("/") ? pattern : directory + "/" + pattern))
      if !patternDirectory.contains(where: { "*?[\\".contains($0) }),
        !includeDirectories.contains(patternDirectory)
      {
        includeDirectories.append(patternDirectory)
      }
      let fullPattern =
        pattern.hasPrefix("/") ? pattern : SystemAccess.globEscaped(directory) + "/" + pattern
      let matches: [String]
      switch SystemAccess.glob(fullPattern) {
      case .success(let paths): matches = paths
      case .failure(let failure):
        diagnostics.errors.append(
          ConfigError(
            code: .unreadableFile, file: file, key: "supervisor.include",
            message: "cannot expand \(tomlQuoted(fullPattern)): \(failure.reason)"))
        continue
      }
      if matches.isEmpty {
        diagnostics.warnings.append(
          ConfigWarning(
            file: file, key: "supervisor.include",
            message:
              "\(tomlQuoted(pattern)) matches no file (looked for \(tomlQuoted(fullPattern)))"
          ))
      }
      // Overlapping patterns (or one that matches the main file) read each file once.
      for path in matches.map(cleanedFilePath) where !files.contains(path) {
        files.append(path)
        do {
          let dropIn = try readDropIn(path, mainFile: file, &diagnostics)
          collector.add(mountsOf: dropIn, &diagnostics)
        } catch {
          diagnostics.errors.append(error)
        }
      }
    }
    collector.checkCommands(&diagnostics)
    if collector.mounts.isEmpty, diagnostics.errors.isEmpty {
      let read = files.count == 1 ? "the file" : "any of the \(files.count) files read"
      diagnostics.warnings.append(
        ConfigWarning(
          file: file,
          message: "no mounts are configured (no [mounts.NAME] table in \(read)): mountsupd "
            + "supervises nothing until a reload adds some"))
    }
    guard diagnostics.errors.isEmpty else {
      throw InvalidConfiguration(errors: diagnostics.errors, warnings: diagnostics.warnings)
    }
    let mounts = collector.mounts.sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }
    // A drop-in with only comments (an example left disabled) is no source of mounts.
    let sources = Set(mounts.map(\.sourceFile))
    let dropIns = files.dropFirst()
    return Configuration(
      supervisor: supervisor, mounts: mounts,
      files: [file] + dropIns.filter(sources.contains),
      dropInsWithoutMounts: dropIns.filter { !sources.contains($0) },
      includeDirectories: includeDirectories, warnings: diagnostics.warnings)
  }

  /// A drop-in holds only `[mounts.*]` tables: settings of the supervisor stay in one place.
  /// Throws when it cannot be read or parsed; other mistakes go to `diagnostics`.
  private static func readDropIn(
    _ path: String, mainFile: String, _ diagnostics: inout Diagnostics
  ) throws(ConfigError) -> TableReader {
    let text = try readFile(
      path, notFound: "cannot read the file: it does not exist (a dangling symlink?)",
      notFoundCode: .unreadableFile)
    let root = TableReader(try parseTOML(text, file: path), file: path)
    if root.contains("supervisor") {
      diagnostics.errors.append(
        root.error(
          .misplacedTable, key: "supervisor",
          "a drop-in may only define [mounts.NAME] tables; move [supervisor] to \(mainFile)"))
    }
    diagnostics.errors += root.unknownKeyErrors(["mounts"], alsoAllowed: ["supervisor"])
    return root
  }

  private static func parseTOML(_ text: String, file: String) throws(ConfigError) -> TOMLTable {
    // Said apart, with its place: the one character TOML text may not hold even in a comment.
    if let (line, column) = NulEscapes.rawNul(in: text) {
      throw ConfigError(
        code: .invalidTOML, file: file,
        message: "invalid TOML: a NUL byte; TOML text cannot contain one (write \\u0000 in a "
          + "string, which is rejected as well)", line: line, column: column)
    }
    do {
      return try TOMLParser.parse(text)
    } catch {
      throw ConfigError(
        code: .invalidTOML, file: file, message: "invalid TOML: \(error.message)",
        line: error.line, column: error.column)
    }
  }

  private static func existingGroup(_ section: TableReader, _ key: String) throws(ConfigError)
    -> String?
  {
    guard let group = try section.string(key) else { return nil }
    guard SystemAccess.groupExists(group) else {
      throw section.error(
        .unknownAccount, key: key, "no group \(tomlQuoted(group)) exists on this machine (getgrnam)"
      )
    }
    return group
  }
}

/// What validation asks of the machine, gathered once per load.
struct LoadContext {
  var resolver: MountpointResolver
  var options = LoadOptions()

  /// The machine as it is now.
  static func current(options: LoadOptions = LoadOptions()) -> LoadContext {
    LoadContext(
      resolver: MountpointResolver(fuseMountpoints: SystemAccess.fuseMountpoints()),
      options: options)
  }

  /// Whether `path` is at or inside a FUSE mount, where no check may look (a hung daemon would
  /// block it).
  func isInsideFUSE(_ path: String) -> Bool {
    isAtOrInside(path, anyOf: resolver.fuseMountpoints)
  }
}
