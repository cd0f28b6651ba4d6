/// Compact JSON with every object's keys sorted (by their UTF-8 bytes), the form of the control
/// protocol's lines. Foundation's `JSONEncoder` took 19 ms of the daemon's CPU for the status of
/// 1,000 mounts, most of it in the dynamic casts it makes for every value (is it a Date, Data,
/// URL, a dictionary keyed by strings?), which no type of this protocol is; primitives are
/// recognized here by a comparison of types instead. Values go into a small tree first, because
/// a keyed container learns its keys in declaration order and a parent's entry can still change
/// while a nested container is filled.
enum JSONLine {
  static func encode(_ value: some Encodable) throws -> [UInt8] {
    let root = Slot()
    try root.store(value, codingPath: [])
    var writer = Writer()
    try writer.write(root.node, codingPath: [])
    return writer.bytes
  }

  indirect enum Node {
    case null
    case bool(Bool)
    case int(Int64)
    case uint(UInt64)
    case double(Double)
    case string(String)
    case object(Object)
    case array(Elements)
    /// Filled in later (a super encoder's value).
    case slot(Slot)

    /// Primitives directly (each primitive's own `encode(to:)` would come back here); nil for
    /// any other value.
    static func primitive<T: Encodable>(_ value: T) -> Node? {
      if T.self == String.self { return .string(value as! String) }
      if T.self == Int.self { return .int(Int64(value as! Int)) }
      if T.self == Int32.self { return .int(Int64(value as! Int32)) }
      if T.self == Int64.self { return .int(value as! Int64) }
      if T.self == UInt64.self { return .uint(value as! UInt64) }
      if T.self == UInt32.self { return .uint(UInt64(value as! UInt32)) }
      if T.self == Double.self { return .double(value as! Double) }
      if T.self == Bool.self { return .bool(value as! Bool) }
      if T.self == Int8.self { return .int(Int64(value as! Int8)) }
      if T.self == Int16.self { return .int(Int64(value as! Int16)) }
      if T.self == UInt8.self { return .uint(UInt64(value as! UInt8)) }
      if T.self == UInt16.self { return .uint(UInt64(value as! UInt16)) }
      if T.self == UInt.self { return .uint(UInt64(value as! UInt)) }
      if T.self == Float.self { return .double(Double(value as! Float)) }
      // The optionals this protocol writes as null when absent, without a container each.
      if T.self == String?.self { return (value as! String?).map(Node.string) ?? .null }
      if T.self == Int32?.self { return (value as! Int32?).map { .int(Int64($0)) } ?? .null }
      if T.self == Int?.self { return (value as! Int?).map { .int(Int64($0)) } ?? .null }
      if T.self == Double?.self { return (value as! Double?).map(Node.double) ?? .null }
      if T.self == Bool?.self { return (value as! Bool?).map(Node.bool) ?? .null }
      return nil
    }

    static func of<T: Encodable>(_ value: T, codingPath: [any CodingKey]) throws -> Node {
      if let node = primitive(value) { return node }
      let slot = Slot()
      try value.encode(to: LineEncoder(slot: slot, codingPath: codingPath))
      return slot.node
    }
  }

  /// Writes the tree. The keys of a keyed type come in the same order for every value of it: the
  /// sorted order is worked out once per type and key sequence.
  struct Writer {
    var bytes: [UInt8] = []
    private var orders: [ObjectIdentifier: (keys: [String], order: [Int])] = [:]

    init() { bytes.reserveCapacity(1024) }

    mutating func write(_ node: Node, codingPath: [any CodingKey]) throws {
      switch node {
      case .null: bytes.append(contentsOf: "null".utf8)
      case .bool(let value): bytes.append(contentsOf: (value ? "true" : "false").utf8)
      case .int(let value): bytes.append(contentsOf: String(value).utf8)
      case .uint(let value): bytes.append(contentsOf: String(value).utf8)
      case .double(let value):
        guard value.isFinite else {
          throw EncodingError.invalidValue(
            value, .init(codingPath: codingPath, debugDescription: "\(value) is not a JSON number"))
        }
        bytes.append(contentsOf: value.description.utf8)
      case .string(let value): write(string: value)
      case .object(let object):
        bytes.append(UInt8(ascii: "{"))
        var first = true
        for index in order(of: object) {
          if !first { bytes.append(UInt8(ascii: ",")) }
          first = false
          write(string: object.keys[index])
          bytes.append(UInt8(ascii: ":"))
          try write(object.values[index], codingPath: codingPath)
        }
        bytes.append(UInt8(ascii: "}"))
      case .array(let array):
        bytes.append(UInt8(ascii: "["))
        for (index, node) in array.nodes.enumerated() {
          if index > 0 { bytes.append(UInt8(ascii: ",")) }
          try write(node, codingPath: codingPath)
        }
        bytes.append(UInt8(ascii: "]"))
      case .slot(let slot): try write(slot.node, codingPath: codingPath)
      }
    }

    /// The indices of the entries by key; of a key written twice, the last one only.
    private mutating func order(of object: Object) -> [Int] {
      if let known = orders[object.keyType], known.keys == object.keys {
        return known.order
      }
      let sorted = object.keys.indices.sorted {
        object.keys[$0] == object.keys[$1] ? $0 < $1 : object.keys[$0] < object.keys[$1]
      }
      let order = sorted.indices.filter {
        $0 + 1 == sorted.count || object.keys[sorted[$0 + 1]] != object.keys[sorted[$0]]
      }.map { sorted[$0] }
      orders[object.keyType] = (object.keys, order)
      return order
    }

    /// A string with JSON's escapes: quote, backslash and control characters; "/" and every
    /// non-ASCII character as they are.
    private mutating func write(string: String) {
      bytes.append(UInt8(ascii: "\""))
      var string = string
      string.withUTF8 { utf8 in
        let plain = !utf8.contains {
          $0 < 0x20 || $0 == UInt8(ascii: "\"") || $0 == UInt8(ascii: "\\")
        }
        guard !plain else { return bytes.append(contentsOf: utf8) }
        for byte in utf8 {
          switch byte {
          case UInt8(ascii: "\""): bytes.append(contentsOf: #"\""#.utf8)
          case UInt8(ascii: "\\"): bytes.append(contentsOf: #"\\"#.utf8)
          case 0x0A: bytes.append(contentsOf: #"\n"#.utf8)
          case 0x0D: bytes.append(contentsOf: #"\r"#.utf8)
          case 0x09: bytes.append(contentsOf: #"\t"#.utf8)
          case 0..<0x20:
            let hex = Array("0123456789abcdef".utf8)
            bytes.append(contentsOf: #"\u00"#.utf8)
            bytes.append(hex[Int(byte >> 4)])
            bytes.append(hex[Int(byte & 0xF)])
          default: bytes.append(byte)
          }
        }
      }
      bytes.append(UInt8(ascii: "\""))
    }
  }

  /// Where one value goes; a container fills the slot it was made for.
  final class Slot {
    var node: Node = .null

    func store<T: Encodable>(_ value: T, codingPath: [any CodingKey]) throws {
      node = try Node.of(value, codingPath: codingPath)
    }

    func object(keyedBy type: (some CodingKey).Type) -> Object {
      if case .object(let object) = node { return object }
      let object = Object(keyType: ObjectIdentifier(type))
      node = .object(object)
      return object
    }

    var elements: Elements {
      if case .array(let elements) = node { return elements }
      let elements = Elements()
      node = .array(elements)
      return elements
    }
  }

  final class Object {
    /// The `CodingKey` type the keys come from.
    let keyType: ObjectIdentifier
    var keys: [String] = []
    var values: [Node] = []

    init(keyType: ObjectIdentifier) { self.keyType = keyType }

    func append(_ key: some CodingKey, _ node: Node) {
      keys.append(key.stringValue)
      values.append(node)
    }
  }

  final class Elements {
    var nodes: [Node] = []
  }

  struct LineEncoder: Encoder {
    let slot: Slot
    let codingPath: [any CodingKey]
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    func container<Key: CodingKey>(keyedBy type: Key.Type) -> KeyedEncodingContainer<Key> {
      KeyedEncodingContainer(Keyed(object: slot.object(keyedBy: type), codingPath: codingPath))
    }

    func unkeyedContainer() -> any UnkeyedEncodingContainer {
      Unkeyed(elements: slot.elements, codingPath: codingPath)
    }

    func singleValueContainer() -> any SingleValueEncodingContainer {
      Single(slot: slot, codingPath: codingPath)
    }
  }

  struct Keyed<Key: CodingKey>: KeyedEncodingContainerProtocol {
    let object: Object
    let codingPath: [any CodingKey]

    mutating func encodeNil(forKey key: Key) throws { object.append(key, .null) }

    mutating func encode<T: Encodable>(_ value: T, forKey key: Key) throws {
      if let node = Node.primitive(value) { return object.append(key, node) }
      object.append(key, try Node.of(value, codingPath: codingPath + [key]))
    }

    mutating func nestedContainer<NestedKey: CodingKey>(
      keyedBy keyType: NestedKey.Type, forKey key: Key
    ) -> KeyedEncodingContainer<NestedKey> {
      let nested = Object(keyType: ObjectIdentifier(keyType))
      object.append(key, .object(nested))
      return KeyedEncodingContainer(
        Keyed<NestedKey>(object: nested, codingPath: codingPath + [key]))
    }

    mutating func nestedUnkeyedContainer(forKey key: Key) -> any UnkeyedEncodingContainer {
      let nested = Elements()
      object.append(key, .array(nested))
      return Unkeyed(elements: nested, codingPath: codingPath + [key])
    }

    mutating func superEncoder() -> any Encoder {
      let slot = Slot()
      object.append(SuperKey.super, .slot(slot))
      return LineEncoder(slot: slot, codingPath: codingPath)
    }

    mutating func superEncoder(forKey key: Key) -> any Encoder {
      let slot = Slot()
      object.append(key, .slot(slot))
      return LineEncoder(slot: slot, codingPath: codingPath + [key])
    }
  }

  enum SuperKey: String, CodingKey { case `super` }

  struct Unkeyed: UnkeyedEncodingContainer {
    let elements: Elements
    let codingPath: [any CodingKey]
    var count: Int { elements.nodes.count }

    mutating func encodeNil() throws { elements.nodes.append(.null) }

    mutating func encode<T: Encodable>(_ value: T) throws {
      elements.nodes.append(try Node.of(value, codingPath: codingPath))
    }

    mutating func nestedContainer<NestedKey: CodingKey>(keyedBy keyType: NestedKey.Type)
      -> KeyedEncodingContainer<NestedKey>
    {
      let nested = Object(keyType: ObjectIdentifier(keyType))
      elements.nodes.append(.object(nested))
      return KeyedEncodingContainer(Keyed<NestedKey>(object: nested, codingPath: codingPath))
    }

    mutating func nestedUnkeyedContainer() -> any UnkeyedEncodingContainer {
      let nested = Elements()
      elements.nodes.append(.array(nested))
      return Unkeyed(elements: nested, codingPath: codingPath)
    }

    mutating func superEncoder() -> any Encoder {
      let slot = Slot()
      elements.nodes.append(.slot(slot))
      return LineEncoder(slot: slot, codingPath: codingPath)
    }
  }

  struct Single: SingleValueEncodingContainer {
    let slot: Slot
    let codingPath: [any CodingKey]

    mutating func encodeNil() throws { slot.node = .null }

    mutating func encode<T: Encodable>(_ value: T) throws {
      slot.node = try Node.of(value, codingPath: codingPath)
    }
  }
}
