import Glibc

/// The few things the loader asks of the machine: file contents, glob matches, accounts.
enum SystemAccess {
  enum ReadFailure: Error {
    case notFound
    /// A FIFO, a device, a directory or a socket: what it is, e.g. "a FIFO".
    case notRegular(String)
    /// Larger than the limit; the size seen.
    case tooLarge(Int64)
    case failed(String)
  }

  struct GlobFailure: Error {
    let reason: String
  }

  /// The whole file as UTF-8 text, if it is a regular file of at most `limit` bytes; errno is
  /// kept so that "does not exist" can be told apart.
  ///
  /// Never blocks and never reads without bound, since this runs on the supervisor's event loop at
  /// a reload: a FIFO or a device is refused by `stat` before it is opened (opening some devices
  /// has effects), and again by `fstat` of what was opened, with `O_NONBLOCK` so that even a FIFO
  /// swapped in between cannot block the `open`; at most `limit + 1` bytes are read.
  static func readTextFile(_ path: String, limit: Int) -> Result<String, ReadFailure> {
    var info = stat()
    guard stat(path, &info) == 0 else {
      let error = errno
      return .failure(error == ENOENT ? .notFound : .failed(errorText(error)))
    }
    if let kind = nonRegularKind(info.st_mode) { return .failure(.notRegular(kind)) }
    guard info.st_size <= limit else { return .failure(.tooLarge(Int64(info.st_size))) }
    let fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY)
    guard fd >= 0 else {
      let error = errno
      return .failure(error == ENOENT ? .notFound : .failed(errorText(error)))
    }
    defer { close(fd) }
    guard fstat(fd, &info) == 0 else { return .failure(.failed(errorText(errno))) }
    if let kind = nonRegularKind(info.st_mode) { return .failure(.notRegular(kind)) }
    let bytes: [UInt8]
    switch readAll(fd, limit: limit) {
    case .success(let read): bytes = read
    case .failure(let failure): return .failure(failure)
    }
    guard let text = String(validating: bytes, as: UTF8.self) else {
      return .failure(.failed("not valid UTF-8 text"))
    }
    return .success(text)
  }

  /// What a file that is not a regular file is, in words ("a FIFO"); nil for a regular file.
  static func nonRegularKind(_ mode: mode_t) -> String? {
    switch mode & S_IFMT {
    case S_IFREG: nil
    case S_IFDIR: "a directory"
    case S_IFIFO: "a FIFO (named pipe)"
    case S_IFCHR: "a character device"
    case S_IFBLK: "a block device"
    case S_IFSOCK: "a socket"
    case S_IFLNK: "a symbolic link"
    default: "not a regular file"
    }
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

  /// The mountpoints of the FUSE mounts (`fuse`, `fuse.*`, `fuseblk`) in this process's mount
  /// namespace, from `/proc/self/mountinfo`; empty when it cannot be read.
  static func fuseMountpoints() -> Set<String> {
    let fd = open("/proc/self/mountinfo", O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return [] }
    defer { close(fd) }
    guard case .success(let table) = readAll(fd, limit: .max) else { return [] }
    // Bytes, not lines of a String: this runs at every start and reload, and a table of a
    // thousand mounts is a thousand lines.
    var mountpoints: Set<String> = []
    for line in table.split(separator: UInt8(ascii: "\n")) {
      // ID PARENT MAJOR:MINOR ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPER
      guard let dash = separatorRange(in: line) else { continue }
      let type = line[dash.upperBound...].prefix { $0 != UInt8(ascii: " ") }
      guard type.starts(with: "fuse".utf8),
        type.count == 4 || type.elementsEqual("fuseblk".utf8)
          || type.dropFirst(4).first == UInt8(ascii: ".")
      else { continue }
      let fields = line[..<dash.lowerBound].split(separator: UInt8(ascii: " "), maxSplits: 5)
      guard fields.count > 4 else { continue }
      mountpoints.insert(unescapeMountinfoField(fields[4]))
    }
    return mountpoints
  }

  /// Where `" - "` (the end of the optional fields) is in a mountinfo line. A plain scan: the
  /// generic `firstRange(of:)` cost 0.7 ms on every start for a table of 70 mounts.
  private static func separatorRange(in line: ArraySlice<UInt8>) -> Range<Int>? {
    let space = UInt8(ascii: " ")
    let dash = UInt8(ascii: "-")
    var index = line.startIndex
    while index + 2 < line.endIndex {
      if line[index] == space, line[index + 1] == dash, line[index + 2] == space {
        return index..<index + 3
      }
      index += 1
    }
    return nil
  }

  /// Reads `fd` to its end, retrying interrupted reads; more than `limit` bytes is `tooLarge`
  /// (a file that grew since it was looked at).
  private static func readAll(_ fd: Int32, limit: Int) -> Result<[UInt8], ReadFailure> {
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
      let count = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
      if count == 0 { return .success(bytes) }
      if count < 0 {
        if errno == EINTR { continue }
        return .failure(.failed(errorText(errno)))
      }
      bytes.append(contentsOf: chunk[..<count])
      if bytes.count > limit { return .failure(.tooLarge(Int64(bytes.count))) }
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

/// Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`) in one
/// field; shared by the configuration check and the runtime's mount table.
public func unescapeMountinfoField(_ field: ArraySlice<UInt8>) -> String {
  guard field.contains(UInt8(ascii: "\\")) else { return String(decoding: field, as: UTF8.self) }
  var bytes: [UInt8] = []
  var index = field.startIndex
  while index < field.endIndex {
    if field[index] == UInt8(ascii: "\\"), index + 3 < field.endIndex,
      let value = UInt8(String(decoding: field[(index + 1)...(index + 3)], as: UTF8.self), radix: 8)
    {
      bytes.append(value)
      index += 4
    } else {
      bytes.append(field[index])
      index += 1
    }
  }
  return String(decoding: bytes, as: UTF8.self)
}
