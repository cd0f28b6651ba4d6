/// Reads typed values out of one TOML table. Every mismatch becomes a ``ConfigError`` that names
/// the file, the mount and the full dotted key, so no caller has to assemble that context itself.
struct TableReader {
  let table: TOMLTable
  let file: String
  let mount: String?
  /// The dotted path of this table relative to the mount (or file): `""`, `"supervisor."`,
  /// `"environment."`.
  let keyPrefix: String

  init(_ table: TOMLTable, file: String, mount: String? = nil, keyPrefix: String = "") {
    self.table = table
    self.file = file
    self.mount = mount
    self.keyPrefix = keyPrefix
  }

  var keys: [String] { table.keys }

  func contains(_ key: String) -> Bool { table.contains(key: key) }

  func error(_ code: ConfigError.Code, key: String?, _ message: String) -> ConfigError {
    ConfigError(
      code: code, file: file, mount: mount, key: key.map { keyPrefix + $0 }, message: message)
  }

  /// An error for every key not in `known` (nor in `alsoAllowed`, keys reported otherwise),
  /// suggesting the closest known key so a typo is obvious.
  func unknownKeyErrors(_ known: [String], alsoAllowed: [String] = []) -> [ConfigError] {
    table.keys.filter { !known.contains($0) && !alsoAllowed.contains($0) }.map { key in
      let hint =
        if let suggestion = closestMatch(to: key, among: known) {
          "did you mean \"\(suggestion)\"?"
        } else {
          "known keys: " + known.joined(separator: ", ")
        }
      return error(.unknownKey, key: key, "unknown key (\(hint))")
    }
  }

  func string(_ key: String) throws(ConfigError) -> String? {
    guard let value = table[key] else { return nil }
    guard let string = value.string else { throw wrongType(key, expected: "a string", value) }
    guard !NulEscapes.containsNul(string) else { throw nulError(key, "the value") }
    return string
  }

  /// A NUL cannot be passed to the kernel in a path, an argument or an environment entry: C
  /// would cut the string there, and the mount would run somewhere else than written.
  func nulError(_ key: String, _ what: String) -> ConfigError {
    error(
      .invalidValue, key: key,
      "\(what) contains a NUL character (\\u0000), which no path, command, user, group or "
        + "environment entry can hold")
  }

  func bool(_ key: String) throws(ConfigError) -> Bool? {
    guard let value = table[key] else { return nil }
    guard let bool = value.bool else { throw wrongType(key, expected: "a boolean", value) }
    return bool
  }

  func int(_ key: String) throws(ConfigError) -> Int? {
    guard let value = table[key] else { return nil }
    guard let int = value.int else { throw wrongType(key, expected: "an integer", value) }
    return int
  }

  func stringArray(_ key: String) throws(ConfigError) -> [String]? {
    guard let value = table[key] else { return nil }
    guard let array = value.array else {
      throw wrongType(key, expected: "an array of strings", value)
    }
    var strings: [String] = []
    for (index, element) in array.enumerated() {
      guard let string = element.string else {
        throw error(
          .wrongType, key: key,
          "expected an array of strings, but \(key)[\(index)] is \(typeName(element.type))")
      }
      guard !NulEscapes.containsNul(string) else { throw nulError(key, "\(key)[\(index)]") }
      strings.append(string)
    }
    return strings
  }

  /// A nested table, read with its own key prefix (`supervisor.`, `environment.`).
  func table(_ key: String) throws(ConfigError) -> TableReader? {
    guard let value = table[key] else { return nil }
    guard let nested = value.table else { throw wrongType(key, expected: "a table", value) }
    return TableReader(nested, file: file, mount: mount, keyPrefix: keyPrefix + key + ".")
  }

  /// A duration string (`"10s"`, `"1m30s"`) or an integer number of seconds; always > 0 unless
  /// `allowZero`.
  func duration(_ key: String, allowZero: Bool = false) throws(ConfigError) -> Duration? {
    guard let value = table[key] else { return nil }
    let duration: Duration
    if let seconds = value.int {
      guard seconds >= 0 else {
        throw error(.invalidDuration, key: key, "\(seconds) is negative (\(durationExamples))")
      }
      duration = .seconds(seconds)
    } else if let text = value.string {
      guard let parsed = parseDuration(text) else {
        throw error(
          .invalidDuration, key: key, "\(tomlQuoted(text)) is not a duration (\(durationExamples))")
      }
      duration = parsed
    } else {
      throw wrongType(
        key, expected: "a duration such as \"10s\" or an integer number of seconds", value)
    }
    guard allowZero || duration > .zero else {
      throw error(.invalidDuration, key: key, "must be greater than 0 (\(durationExamples))")
    }
    return duration
  }

  /// One of an enumeration's raw values; the error lists them all.
  func oneOf<Value: RawRepresentable & CaseIterable>(_ key: String, _: Value.Type)
    throws(ConfigError) -> Value?
  where Value.RawValue == String {
    guard let text = try string(key) else { return nil }
    guard let value = Value(rawValue: text) else {
      let valid = Value.allCases.map { tomlQuoted($0.rawValue) }.joined(separator: ", ")
      throw error(.invalidValue, key: key, "\(tomlQuoted(text)) is not one of \(valid)")
    }
    return value
  }

  func wrongType(_ key: String, expected: String, _ value: TOMLValue)
    -> ConfigError
  {
    error(.wrongType, key: key, "expected \(expected), found \(typeName(value.type))")
  }
}

/// A TOML type with its article, for "expected a string, found an integer".
func typeName(_ type: TOMLType) -> String {
  switch type {
  case .table: "a table"
  case .array: "an array"
  case .string: "a string"
  case .int: "an integer"
  case .double: "a floating-point number"
  case .bool: "a boolean"
  case .date: "a date"
  case .time: "a time"
  case .dateTime: "a date-time"
  }
}

/// The known key at most 2 edits (insert, delete, substitute, swap neighbours) away, if any.
func closestMatch(to key: String, among known: [String]) -> String? {
  let candidates = known.map { ($0, editDistance(key.lowercased(), $0)) }
  guard let best = candidates.min(by: { $0.1 < $1.1 }), best.1 <= 2 else { return nil }
  return best.0
}

/// Optimal string alignment distance: Levenshtein plus transposition of adjacent characters,
/// so that "mountpiont" is one edit from "mountpoint".
func editDistance(_ a: String, _ b: String) -> Int {
  let a = Array(a)
  let b = Array(b)
  if a.isEmpty || b.isEmpty { return max(a.count, b.count) }
  var previous2 = [Int](repeating: 0, count: b.count + 1)
  var previous = Array(0...b.count)
  for i in 1...a.count {
    var current = [i] + [Int](repeating: 0, count: b.count)
    for j in 1...b.count {
      let cost = a[i - 1] == b[j - 1] ? 0 : 1
      current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
      if i > 1, j > 1, a[i - 1] == b[j - 2], a[i - 2] == b[j - 1] {
        current[j] = min(current[j], previous2[j - 2] + 1)
      }
    }
    previous2 = previous
    previous = current
  }
  return previous[b.count]
}

/// A TOML basic string literal: quoted, with `"`, `\` and control characters escaped.
func tomlQuoted(_ text: String) -> String {
  "\"" + tomlEscaped(text) + "\""
}

/// The inside of a TOML basic string; also used to show keys and names safely in messages.
func tomlEscaped(_ text: String) -> String {
  var escaped = ""
  for scalar in text.unicodeScalars {
    switch scalar {
    case "\"": escaped += "\\\""
    case "\\": escaped += "\\\\"
    case "\n": escaped += "\\n"
    case "\t": escaped += "\\t"
    case "\r": escaped += "\\r"
    case _ where scalar.value < 0x20 || scalar.value == 0x7F:
      let hex = String(scalar.value, radix: 16, uppercase: true)
      escaped += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
    default: escaped.unicodeScalars.append(scalar)
    }
  }
  return escaped
}

/// A key as TOML writes it: bare when it can be, quoted otherwise (mount names may hold `.`
/// and `@`).
func tomlKey(_ key: String) -> String {
  let bare = !key.isEmpty && key.unicodeScalars.allSatisfy { isBareKeyCharacter($0) }
  return bare ? key : tomlQuoted(key)
}

private func isBareKeyCharacter(_ scalar: Unicode.Scalar) -> Bool {
  switch scalar {
  case "A"..."Z", "a"..."z", "0"..."9", "_", "-": true
  default: false
  }
}
