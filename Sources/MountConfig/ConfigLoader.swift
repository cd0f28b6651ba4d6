import TOMLKit

/// Reads and validates the supervisor's configuration: the main TOML file plus the drop-ins its
/// `[supervisor] include` globs name.
///
/// Everything is checked before anything is returned, so a configuration either is used whole or
/// not at all: at start a ``ConfigError`` means exit non-zero, at reload it means change nothing.
public enum ConfigLoader {
  /// Keys of the `[supervisor]` table.
  static let supervisorKeys = ["control_socket", "include", "admin_group", "status_group"]

  /// The largest configuration file (main file or drop-in) that is read: 1 MiB, far more than
  /// any list of mounts needs, and small enough to read at once on the event loop.
  public static let maximumFileSize = 1 << 20

  /// Loads the main file at `path` (made absolute against the working directory) and its includes.
  public static func load(path: String = Configuration.defaultPath) throws(ConfigError)
    -> Configuration
  {
    let file = absoluteFilePath(path)
    return try parse(toml: readFile(file, notFound: "the file does not exist"), file: file)
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
  public static func parse(toml: String, file: String, baseDirectory: String? = nil)
    throws(ConfigError) -> Configuration
  {
    try parse(toml: toml, file: file, baseDirectory: baseDirectory, context: .current())
  }

  /// The same with what the machine looks like given (tests give FUSE mountpoints).
  static func parse(toml: String, file: String, baseDirectory: String?, context: LoadContext)
    throws(ConfigError) -> Configuration
  {
    let file = cleanedFilePath(file)
    let root = TableReader(try parseTOML(toml, file: file), file: file)
    try root.rejectUnknownKeys(["supervisor", "mounts"])

    var supervisor = SupervisorSettings()
    var includes: [String] = []
    if let section = try root.table("supervisor") {
      try section.rejectUnknownKeys(supervisorKeys)
      if let socket = try section.string("control_socket") {
        switch normalizedPath(socket, absolute: true) {
        case .success("/"):
          throw section.error(.invalidPath, key: "control_socket", "\"/\" cannot be a socket")
        case .success(let path): supervisor.controlSocket = path
        case .failure(let problem):
          throw section.error(.invalidPath, key: "control_socket", problem.message)
        }
      }
      supervisor.adminGroup = try existingGroup(section, "admin_group")
      supervisor.statusGroup = try existingGroup(section, "status_group")
      includes = try section.stringArray("include") ?? []
      if includes.contains("") {
        throw section.error(.invalidValue, key: "include", "an include pattern must not be empty")
      }
    }

    var collector = MountCollector(context: context)
    try collector.add(mountsOf: root)
    var files = [file]
    let directory = baseDirectory ?? directoryName(of: file)
    for pattern in includes {
      let fullPattern =
        pattern.hasPrefix("/") ? pattern : SystemAccess.globEscaped(directory) + "/" + pattern
      let matches: [String]
      switch SystemAccess.glob(fullPattern) {
      case .success(let paths): matches = paths
      case .failure(let failure):
        throw ConfigError(
          code: .unreadableFile, file: file, key: "supervisor.include",
          message: "cannot expand \(tomlQuoted(fullPattern)): \(failure.reason)")
      }
      // Overlapping patterns (or one that matches the main file) read each file once.
      for path in matches.map(cleanedFilePath) where !files.contains(path) {
        files.append(path)
        try collector.add(mountsOf: try readDropIn(path, mainFile: file))
      }
    }
    let mounts = collector.mounts.sorted { $0.name.utf8.lexicographicallyPrecedes($1.name.utf8) }
    return Configuration(supervisor: supervisor, mounts: mounts, files: files)
  }

  /// A drop-in holds only `[mounts.*]` tables: settings of the supervisor stay in one place.
  private static func readDropIn(_ path: String, mainFile: String) throws(ConfigError)
    -> TableReader
  {
    let text = try readFile(
      path, notFound: "cannot read the file: it does not exist (a dangling symlink?)",
      notFoundCode: .unreadableFile)
    let root = TableReader(try parseTOML(text, file: path), file: path)
    if root.contains("supervisor") {
      throw root.error(
        .misplacedTable, key: "supervisor",
        "a drop-in may only define [mounts.NAME] tables; move [supervisor] to \(mainFile)")
    }
    try root.rejectUnknownKeys(["mounts"])
    return root
  }

  private static func parseTOML(_ text: String, file: String) throws(ConfigError) -> TOMLTable {
    // The text goes to toml++ as a C string: a raw NUL byte would end the file there, silently.
    if let (line, column) = NulEscapes.rawNul(in: text) {
      throw ConfigError(
        code: .invalidTOML, file: file,
        message: "invalid TOML: a NUL byte; TOML text cannot contain one (write \\u0000 in a "
          + "string, which is rejected as well)", line: line, column: column)
    }
    do {
      return try TOMLTable(string: NulEscapes.mark(text))
    } catch let error as TOMLParseError {
      throw ConfigError(
        code: .invalidTOML, file: file, message: "invalid TOML: \(error.description)",
        line: error.source.begin.line, column: error.source.begin.column)
    } catch {
      throw ConfigError(code: .invalidTOML, file: file, message: "invalid TOML: \(error)")
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

  /// The machine as it is now.
  static func current() -> LoadContext {
    LoadContext(resolver: MountpointResolver(fuseMountpoints: SystemAccess.fuseMountpoints()))
  }
}

/// Gathers the mounts of all files in reading order, rejecting names and mountpoints seen before.
struct MountCollector {
  let context: LoadContext
  var mounts: [MountSpec] = []
  var byName: [String: MountSpec] = [:]
  var byMountpoint: [String: MountSpec] = [:]

  mutating func add(mountsOf root: TableReader) throws(ConfigError) {
    guard let section = try root.table("mounts") else { return }
    for (name, value) in section.table {
      guard !NulEscapes.containsNul(name) else {
        throw ConfigError(
          code: .invalidValue, file: root.file, mount: name,
          message: "the mount name contains a NUL character (\\u0000)")
      }
      guard isValidMountName(name) else {
        throw ConfigError(
          code: .invalidValue, file: root.file, mount: name,
          message: "invalid mount name: use letters, digits and \"_.@-\", starting with a letter"
            + " or digit (the name appears in logs and paths)")
      }
      if let earlier = byName[name] {
        throw ConfigError(
          code: .duplicateName, file: root.file, mount: name,
          message: "a mount of this name is already defined in \(earlier.sourceFile)")
      }
      guard let table = value.table else {
        throw section.wrongType(name, expected: "a table", value)
      }
      let mount = TableReader(table, file: root.file, mount: name)
      let spec = try MountSpec(name: name, reading: mount, context: context)
      if let other = byMountpoint[spec.mountpoint] {
        // Compared after resolving symlinks: two spellings of one directory are one mountpoint.
        let resolved = spec.mountpointAsWritten ?? other.mountpointAsWritten
        throw mount.error(
          .duplicateMountpoint, key: "mountpoint",
          "\(tomlQuoted(spec.mountpoint)) is already the mountpoint of mount"
            + " \(tomlQuoted(other.name)) in \(other.sourceFile)"
            + (resolved == nil
              ? ""
              : " (written \(tomlQuoted(spec.mountpointAsWritten ?? spec.mountpoint)) here and "
                + "\(tomlQuoted(other.mountpointAsWritten ?? other.mountpoint)) there; both "
                + "resolve to the same directory)"))
      }
      byName[name] = spec
      byMountpoint[spec.mountpoint] = spec
      mounts.append(spec)
    }
  }
}

/// `path` made absolute against the working directory (when there is one), with `//` and `.`
/// components removed.
func absoluteFilePath(_ path: String) -> String {
  guard !path.hasPrefix("/"), let directory = SystemAccess.currentDirectory() else {
    return cleanedFilePath(path)
  }
  return cleanedFilePath(directory + "/" + path)
}

/// Removes empty and `.` components so one file has one spelling in `files` and in messages.
/// `..` stays: resolving it lexically could name another file than the kernel opens.
func cleanedFilePath(_ path: String) -> String {
  let components = path.split(separator: "/").filter { $0 != "." }
  let joined = components.joined(separator: "/")
  return path.hasPrefix("/") ? "/" + joined : (joined.isEmpty ? "." : joined)
}

func directoryName(of path: String) -> String {
  guard let slash = path.lastIndex(of: "/") else { return "." }
  return slash == path.startIndex ? "/" : String(path[..<slash])
}
