import Glibc

/// The few things the loader asks of the machine: file contents, glob matches, accounts.
enum SystemAccess {
  enum ReadFailure: Error {
    case notFound
    case failed(String)
  }

  struct GlobFailure: Error {
    let reason: String
  }

  /// The whole file as UTF-8 text; errno is kept so that "does not exist" can be told apart.
  static func readTextFile(_ path: String) -> Result<String, ReadFailure> {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else {
      let error = errno
      return .failure(error == ENOENT ? .notFound : .failed(errorText(error)))
    }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
      let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
      if count == 0 { break }
      if count < 0 {
        if errno == EINTR { continue }
        return .failure(.failed(errorText(errno)))
      }
      bytes.append(contentsOf: chunk[..<count])
    }
    guard let text = String(validating: bytes, as: UTF8.self) else {
      return .failure(.failed("not valid UTF-8 text"))
    }
    return .success(text)
  }

  /// Regular files (and symlinks to them) matching a glob pattern, sorted bytewise so the order
  /// never depends on the locale. A pattern that matches nothing gives an empty list.
  static func glob(_ pattern: String) -> Result<[String], GlobFailure> {
    var matches = glob_t()
    defer { globfree(&matches) }
    switch Glibc.glob(pattern, GLOB_MARK, nil, &matches) {
    case 0: break
    case GLOB_NOMATCH: return .success([])
    case GLOB_NOSPACE: return .failure(GlobFailure(reason: "out of memory while matching"))
    default: return .failure(GlobFailure(reason: "a directory could not be read while matching"))
    }
    var paths: [String] = []
    for index in 0..<Int(matches.gl_pathc) {
      guard let path = matches.gl_pathv[index].map({ String(cString: $0) }),
        !path.hasSuffix("/")  // GLOB_MARK marks directories; only files are drop-ins
      else { continue }
      paths.append(path)
    }
    return .success(paths.sorted { $0.utf8.lexicographicallyPrecedes($1.utf8) })
  }

  /// Escapes glob metacharacters so a directory name is matched literally.
  static func globEscaped(_ text: String) -> String {
    var escaped = ""
    for character in text {
      if "*?[]\\".contains(character) { escaped.append("\\") }
      escaped.append(character)
    }
    return escaped
  }

  static func userExists(_ name: String) -> Bool {
    var entry = passwd()
    var result: UnsafeMutablePointer<passwd>?
    return lookUp { buffer, size in getpwnam_r(name, &entry, buffer, size, &result) }
      && result != nil
  }

  static func groupExists(_ name: String) -> Bool {
    var entry = group()
    var result: UnsafeMutablePointer<group>?
    return lookUp { buffer, size in getgrnam_r(name, &entry, buffer, size, &result) }
      && result != nil
  }

  /// Runs a reentrant `get*nam_r` call (safe while tests run in parallel), growing the buffer
  /// on ERANGE.
  private static func lookUp(_ call: (UnsafeMutablePointer<CChar>, Int) -> Int32) -> Bool {
    var size = 4096
    while true {
      var buffer = [CChar](repeating: 0, count: size)
      let status = buffer.withUnsafeMutableBufferPointer { call($0.baseAddress!, $0.count) }
      guard status == ERANGE, size < 1 << 24 else { return status == 0 }
      size *= 2
    }
  }

  /// `nil` when the working directory is gone or unreachable.
  static func currentDirectory() -> String? {
    guard let path = getcwd(nil, 0) else { return nil }
    defer { free(path) }
    return String(cString: path)
  }

  private static func errorText(_ code: Int32) -> String {
    String(cString: strerror(code))
  }
}
