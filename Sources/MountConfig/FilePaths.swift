import Glibc

/// Whether absolute `path` is one of `directories` or lies below one: a walk up its ancestors,
/// so the cost follows the depth of the path, not the number of directories.
func isAtOrInside(_ path: String, anyOf directories: Set<String>) -> Bool {
  guard path.hasPrefix("/"), !directories.isEmpty else { return false }
  if directories.contains("/") { return true }
  var current = Substring(path)
  while !current.isEmpty {
    if directories.contains(String(current)) { return true }
    guard let slash = current.utf8.lastIndex(of: UInt8(ascii: "/")) else { break }
    current = current[..<slash]
  }
  return false
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

/// The target of a symlink (`/proc/self/exe`, a mountpoint's parent); nil when it cannot be read.
public func symlinkTarget(_ path: String) -> String? {
  var buffer = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
  let length = readlink(path, &buffer, buffer.count - 1)
  guard length > 0 else { return nil }
  return String(decoding: buffer.prefix(length).map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
