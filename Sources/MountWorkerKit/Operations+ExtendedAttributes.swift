import CFuse3
import Glibc

// The callbacks of extended attributes. getxattr and listxattr answer a size query (a
// buffer of size 0) with the size, any other with the bytes.

extension SessionContext {
  static func addExtendedAttributeOperations(to ops: inout fuse_lowlevel_ops) {
    ops.setxattr = { req, inode, attributeName, value, size, flags in
      let fs = SessionContext.of(req).fileSystem
      do throws(FUSEError) {
        try fs.setxattr(
          FUSERequest(req!), inode: FUSEInode(inode), name: name(attributeName),
          value: UnsafeRawBufferPointer(start: value, count: size), flags: flags)
        fuse_reply_err(req, 0)
      } catch { fail(req, error) }
    }

    ops.getxattr = { req, inode, attributeName, size in
      let fs = SessionContext.of(req).fileSystem
      replyXattr(req, size: size) { buffer throws(FUSEError) in
        try fs.getxattr(
          FUSERequest(req!), inode: FUSEInode(inode), name: name(attributeName), into: buffer)
      }
    }

    ops.listxattr = { req, inode, size in
      let fs = SessionContext.of(req).fileSystem
      replyXattr(req, size: size) { buffer throws(FUSEError) in
        try fs.listxattr(FUSERequest(req!), inode: FUSEInode(inode), into: buffer)
      }
    }

    ops.removexattr = { req, inode, attributeName in
      let fs = SessionContext.of(req).fileSystem
      do throws(FUSEError) {
        try fs.removexattr(FUSERequest(req!), inode: FUSEInode(inode), name: name(attributeName))
        fuse_reply_err(req, 0)
      } catch { fail(req, error) }
    }
  }
}

/// Answers getxattr/listxattr: a size query when `size` is 0, the bytes otherwise.
private func replyXattr(
  _ request: fuse_req_t?, size: Int,
  _ body: (UnsafeMutableRawBufferPointer) throws(FUSEError) -> Int
) {
  if size == 0 {
    do throws(FUSEError) {
      fuse_reply_xattr(request, try body(UnsafeMutableRawBufferPointer(start: nil, count: 0)))
    } catch { fail(request, error) }
    return
  }
  withUnsafeTemporaryAllocation(byteCount: size, alignment: 1) { buffer in
    do throws(FUSEError) {
      let length = try body(buffer)
      fuse_reply_buf(
        request, buffer.baseAddress?.assumingMemoryBound(to: CChar.self), min(length, size))
    } catch { fail(request, error) }
  }
}
