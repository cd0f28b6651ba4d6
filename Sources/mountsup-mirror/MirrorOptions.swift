/// Whether reads, writes and mmap of open files bypass the worker (FUSE passthrough).
enum PassthroughMode: String, Equatable, Sendable {
  /// Where the kernel offers it and the worker may use it (root), otherwise through the worker.
  case auto
  /// Always; a mirror that cannot fails at start.
  case on
  /// Never: every read and write goes through the worker.
  case off
}

/// The `-o` options of mountsup-mirror, parsed from one or more comma-separated lists.
struct MirrorOptions: Equatable {
  var readOnly = false
  var allowOther = false
  var fsName: String?
  var attributeTimeout = 1.0
  var entryTimeout = 1.0
  var negativeTimeout = 0.0
  var maxThreads = 10
  var passthrough = PassthroughMode.auto
  /// Generic mount flags passed on to the kernel unchanged.
  var kernelFlags: [String] = []

  static let kernelFlagNames: Set<String> = [
    "nosuid", "suid", "nodev", "dev", "noexec", "exec", "noatime", "atime", "relatime",
    "norelatime", "strictatime", "nostrictatime", "sync", "async", "dirsync",
  ]

  static let help = """
    Mount options (-o, comma-separated, repeatable):
      ro, rw               read-only (changes fail with EROFS), or read-write
      allow_other          let every user in; the kernel checks permissions
                           against SOURCE's modes and owners
                           (default_permissions is always on)
      fsname=NAME          source in mountinfo (default mountsup-mirror:SOURCE)
      attr_timeout=SEC     kernel cache time of attributes (default 1)
      entry_timeout=SEC    kernel cache time of names (default 1)
      negative_timeout=SEC kernel cache time of missing names (default 0)
      max_threads=N        most requests served at once (default 10)
      passthrough=MODE     auto, on or off: reads, writes and mmap of open
                           files go straight to SOURCE's files in the kernel
                           (FUSE passthrough, Linux 6.9+, as root); auto
                           (default) uses it where it can, on fails at start
                           where it cannot
      nosuid, nodev, noexec, noatime, relatime, sync, dirsync and the like
                           go to the kernel as they are
    """

  struct Invalid: Error, CustomStringConvertible {
    var description: String
  }

  init() {}

  init(parsing lists: [String]) throws(Invalid) {
    for list in lists {
      for option in MirrorOptions.split(list) where !option.isEmpty {
        try apply(option)
      }
    }
  }

  private mutating func apply(_ option: String) throws(Invalid) {
    let parts = option.split(separator: "=", maxSplits: 1, omittingEmptySubsequences: false)
    let key = String(parts[0])
    let value = parts.count == 2 ? String(parts[1]) : nil
    switch (key, value) {
    case ("ro", nil): readOnly = true
    case ("rw", nil): readOnly = false
    case ("allow_other", nil): allowOther = true
    case ("default_permissions", nil): break
    case ("fsname", let name?) where !name.isEmpty: fsName = name
    case ("attr_timeout", let text?): attributeTimeout = try MirrorOptions.seconds(key, text)
    case ("entry_timeout", let text?): entryTimeout = try MirrorOptions.seconds(key, text)
    case ("negative_timeout", let text?): negativeTimeout = try MirrorOptions.seconds(key, text)
    case ("max_threads", let text?):
      guard let count = Int(text), (1...1024).contains(count) else {
        throw Invalid(description: "max_threads must be a number from 1 to 1024, not '\(text)'")
      }
      maxThreads = count
    case ("passthrough", let text?):
      guard let mode = PassthroughMode(rawValue: text) else {
        throw Invalid(description: "passthrough must be auto, on or off, not '\(text)'")
      }
      passthrough = mode
    case (_, nil) where MirrorOptions.kernelFlagNames.contains(key):
      kernelFlags.append(key)
    default:
      throw Invalid(description: "unknown mount option '\(option)'")
    }
  }

  private static func seconds(_ key: String, _ text: String) throws(Invalid) -> Double {
    guard let value = Double(text), value >= 0, value.isFinite else {
      throw Invalid(description: "\(key) must be a number of seconds, not '\(text)'")
    }
    return value
  }

  /// Splits at commas; a backslash escapes the next character (as in libfuse's option lists).
  static func split(_ list: String) -> [String] {
    var options: [String] = []
    var current = ""
    var escaped = false
    for character in list {
      if escaped {
        current.append(character)
        escaped = false
      } else if character == "\\" {
        escaped = true
      } else if character == "," {
        options.append(current)
        current = ""
      } else {
        current.append(character)
      }
    }
    options.append(current)
    return options
  }
}
