/// A configuration that cannot be used, with enough context for an operator to fix it:
/// the file, the mount and the key at fault, and what is wrong with it.
///
/// Modelled on swift-subprocess's `SubprocessError`: an extensible ``Code`` for programs
/// (tests, reload logic) and a ``description`` for people.
public struct ConfigError: Error, CustomStringConvertible, Equatable, Sendable {
  /// What kind of mistake this is; new kinds can be added without breaking callers.
  public struct Code: Hashable, Sendable, CustomStringConvertible {
    enum Storage: String, Hashable, Sendable {
      case fileNotFound = "file not found"
      case unreadableFile = "unreadable file"
      case notRegularFile = "not a regular file"
      case fileTooLarge = "file too large"
      case invalidTOML = "invalid TOML"
      case unknownKey = "unknown key"
      case missingKey = "missing key"
      case wrongType = "wrong type"
      case invalidValue = "invalid value"
      case invalidDuration = "invalid duration"
      case invalidPath = "invalid path"
      case emptyCommand = "empty command"
      case duplicateName = "duplicate mount name"
      case duplicateMountpoint = "duplicate mountpoint"
      case misplacedTable = "misplaced table"
      case unknownAccount = "unknown user or group"
      case commandNotFound = "command not found"
    }

    let storage: Storage

    init(_ storage: Storage) { self.storage = storage }

    public var description: String { storage.rawValue }

    /// The main configuration file does not exist.
    public static var fileNotFound: Self { .init(.fileNotFound) }
    /// A file exists but cannot be read as UTF-8 text (permissions, bad encoding).
    public static var unreadableFile: Self { .init(.unreadableFile) }
    /// A configuration file (the main file or a drop-in an include matched) is a FIFO, a device,
    /// a directory or a socket: only regular files are read.
    public static var notRegularFile: Self { .init(.notRegularFile) }
    /// A configuration file is larger than ``ConfigLoader/maximumFileSize``.
    public static var fileTooLarge: Self { .init(.fileTooLarge) }
    /// toml++ rejected the file; ``ConfigError/line`` and ``ConfigError/column`` say where.
    public static var invalidTOML: Self { .init(.invalidTOML) }
    /// A key the schema does not know, usually a typo.
    public static var unknownKey: Self { .init(.unknownKey) }
    /// A key every mount must have (`mountpoint`, `command`).
    public static var missingKey: Self { .init(.missingKey) }
    /// A value of the wrong TOML type.
    public static var wrongType: Self { .init(.wrongType) }
    /// A value of the right type that is out of range or not one of the allowed words.
    public static var invalidValue: Self { .init(.invalidValue) }
    /// A duration that does not parse or is out of range.
    public static var invalidDuration: Self { .init(.invalidDuration) }
    /// A path that is relative where it must be absolute (or the reverse), `/`, or contains `..`.
    public static var invalidPath: Self { .init(.invalidPath) }
    /// `command` is empty or its first element is.
    public static var emptyCommand: Self { .init(.emptyCommand) }
    /// Two files define a mount of the same name.
    public static var duplicateName: Self { .init(.duplicateName) }
    /// Two mounts use the same mountpoint.
    public static var duplicateMountpoint: Self { .init(.duplicateMountpoint) }
    /// A table in a file where it is not allowed (`[supervisor]` in a drop-in).
    public static var misplacedTable: Self { .init(.misplacedTable) }
    /// `user`, `group`, `admin_group` or `status_group` names no account on this machine.
    public static var unknownAccount: Self { .init(.unknownAccount) }
    /// `command[0]` is not found on the daemon's search path, or is not an executable file
    /// (an error only where asked for, see ``LoadOptions``; otherwise a ``ConfigWarning``).
    public static var commandNotFound: Self { .init(.commandNotFound) }
  }

  public let code: Code
  /// The file at fault: the main file or the drop-in that holds the mistake.
  public let file: String
  /// The mount at fault (its table key under `[mounts]`), if the mistake is inside one.
  public let mount: String?
  /// The key at fault, as a dotted path: relative to the mount's table when ``mount`` is set
  /// (`start_timeout`, `environment.HOME`), otherwise relative to the file (`supervisor.include`).
  public let key: String?
  /// What is wrong and, where possible, how to fix it.
  public let message: String
  /// Where toml++ found a syntax error (1-based); `nil` for every other kind of error.
  public let line: Int?
  public let column: Int?

  public init(
    code: Code, file: String, mount: String? = nil, key: String? = nil, message: String,
    line: Int? = nil, column: Int? = nil
  ) {
    self.code = code
    self.file = file
    self.mount = mount
    self.key = key
    self.message = message
    self.line = line
    self.column = column
  }

  /// `FILE[:LINE:COLUMN]: [mount "NAME", ][key "KEY": ]MESSAGE`, the form editors and people read.
  public var description: String {
    describeProblem(
      file: file, line: line, column: column, mount: mount, key: key, message: message)
  }
}

/// Something in a valid configuration that is probably a mistake, but not certain to fail:
/// an include that matches no file, a configuration without mounts, a command that is not
/// installed yet. Logged at start and reload, printed by `mountsupd --check-config`.
public struct ConfigWarning: CustomStringConvertible, Equatable, Sendable {
  public let file: String
  public let mount: String?
  public let key: String?
  public let message: String

  public init(file: String, mount: String? = nil, key: String? = nil, message: String) {
    self.file = file
    self.mount = mount
    self.key = key
    self.message = message
  }

  /// The same form as ``ConfigError/description``.
  public var description: String {
    describeProblem(file: file, line: nil, column: nil, mount: mount, key: key, message: message)
  }
}

/// What a configuration that cannot be used is thrown as: every error found in one pass (so an
/// operator fixes them all at once, not one per try), and the warnings found along the way.
public struct InvalidConfiguration: Error, CustomStringConvertible, Equatable, Sendable {
  /// At least one, in the order the files and mounts were read.
  public var errors: [ConfigError]
  public var warnings: [ConfigWarning]

  public init(errors: [ConfigError], warnings: [ConfigWarning] = []) {
    precondition(!errors.isEmpty, "an invalid configuration has at least one error")
    self.errors = errors
    self.warnings = warnings
  }

  /// The one error; or "N errors:" and each error on a line of its own.
  public var description: String {
    guard errors.count > 1 else { return errors[0].description }
    return "\(counted(errors.count, "error")):\n"
      + errors.map(\.description).joined(separator: "\n")
  }
}

func describeProblem(
  file: String, line: Int?, column: Int?, mount: String?, key: String?, message: String
) -> String {
  var text = file
  if let line {
    text += ":\(line)"
    if let column { text += ":\(column)" }
  }
  text += ": "
  var context: [String] = []
  if let mount { context.append("mount \(tomlQuoted(mount))") }
  if let key { context.append("key \(tomlQuoted(key))") }
  if !context.isEmpty { text += context.joined(separator: ", ") + ": " }
  return text + message
}

/// Collects the errors and warnings of one load, so that a mistake does not hide the next.
struct Diagnostics {
  var errors: [ConfigError] = []
  var warnings: [ConfigWarning] = []

  /// Runs one check; its error is kept and the load goes on. Nil when it failed.
  mutating func check<Value>(_ body: () throws(ConfigError) -> Value) -> Value? {
    do {
      return try body()
    } catch {
      errors.append(error)
      return nil
    }
  }
}
