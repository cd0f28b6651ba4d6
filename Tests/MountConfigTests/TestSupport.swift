import Foundation
import MountConfig
import Testing

/// The file name the string-fed tests pretend to have read.
let mainFile = "/etc/mountsup/mounts.toml"

/// A user and a group that exist on every Linux machine, and names that exist on none.
let existingAccount = "root"
let missingAccount = "mountsup-no-such-account"

func parse(_ toml: String) throws(InvalidConfiguration) -> Configuration {
  try ConfigLoader.parse(toml: toml, file: mainFile)
}

/// Asserts that `toml` (as the main file) is rejected with `code`, and that both the fields and
/// the printed message name the file, the mount and the key.
@discardableResult
func expectConfigError(
  _ toml: String, code: ConfigError.Code, mount: String?, key: String?, mentions: [String] = [],
  sourceLocation: SourceLocation = #_sourceLocation
) -> ConfigError? {
  expectConfigError(
    in: mainFile, code: code, mount: mount, key: key, mentions: mentions,
    sourceLocation: sourceLocation
  ) { () throws(InvalidConfiguration) in try parse(toml) }
}

/// Asserts that `load` fails with `code`, naming `file`, `mount` and `key` in fields and message.
@discardableResult
func expectConfigError(
  in file: String, code: ConfigError.Code, mount: String?, key: String?, mentions: [String] = [],
  sourceLocation: SourceLocation = #_sourceLocation,
  _ load: () throws(InvalidConfiguration) -> Configuration
) -> ConfigError? {
  do {
    let configuration = try load()
    Issue.record(
      "expected a \(code) error, got \(configuration.mounts.count) valid mounts",
      sourceLocation: sourceLocation)
    return nil
  } catch {
    #expect(
      error.errors.count == 1, "one error expected: \(error)", sourceLocation: sourceLocation)
    let error = error.errors[0]
    let text = error.description
    #expect(error.code == code, "\(text)", sourceLocation: sourceLocation)
    #expect(error.file == file, "\(text)", sourceLocation: sourceLocation)
    #expect(error.mount == mount, "\(text)", sourceLocation: sourceLocation)
    #expect(error.key == key, "\(text)", sourceLocation: sourceLocation)
    #expect(text.hasPrefix(file), "\(text)", sourceLocation: sourceLocation)
    if let mount {
      #expect(text.contains("mount \"\(mount)\""), "\(text)", sourceLocation: sourceLocation)
    }
    if let key {
      #expect(text.contains("key \"\(key)\""), "\(text)", sourceLocation: sourceLocation)
    }
    for fragment in mentions {
      #expect(text.contains(fragment), "\(text)", sourceLocation: sourceLocation)
    }
    return error
  }
}

/// A fresh directory under the system's temporary directory, removed when `body` returns.
@discardableResult
func withTemporaryDirectory<Result>(_ body: (String) throws -> Result) throws -> Result {
  let template = FileManager.default.temporaryDirectory.appendingPathComponent("mountconfig.XXXXXX")
  var bytes = Array(template.path.utf8CString)
  guard mkdtemp(&bytes) != nil else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
  let path = String(decoding: bytes.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
  defer { try? FileManager.default.removeItem(atPath: path) }
  return try body(path)
}

/// The same for an async body.
@discardableResult
func withTemporaryDirectory<Result>(_ body: (String) async throws -> Result) async throws -> Result
{
  let template = FileManager.default.temporaryDirectory.appendingPathComponent("mountconfig.XXXXXX")
  var bytes = Array(template.path.utf8CString)
  guard mkdtemp(&bytes) != nil else { throw POSIXError(.init(rawValue: errno) ?? .EIO) }
  let path = String(decoding: bytes.dropLast().map { UInt8(bitPattern: $0) }, as: UTF8.self)
  defer { try? FileManager.default.removeItem(atPath: path) }
  return try await body(path)
}

/// Writes `contents` to `directory/name`, creating intermediate directories.
func write(_ contents: String, to name: String, in directory: String) throws {
  let url = URL(fileURLWithPath: directory).appendingPathComponent(name)
  try FileManager.default.createDirectory(
    at: url.deletingLastPathComponent(), withIntermediateDirectories: true)
  try contents.write(to: url, atomically: false, encoding: .utf8)
}
