"""The on-node library cache behind the DatadogLibrary and DatadogInjectorPreload volumes.

- ``store``: ``<storage>/store/<digest>``, one directory per image, appearing
  whole or not at all (built under ``<storage>/tmp``, then renamed into place);
- ``links``: which volume uses which library, the tag and image-index
  resolutions, in SQLite under the storage directory, so they survive restarts;
- ``cache``: resolve, pull once per digest, open for mounting, link and unlink;
- ``cleanup``: deletes a library no volume has used for a while, on its own thread;
- ``preload``: the injector's ``ld.so.preload`` file;
- ``family``: starts all of it, or explains in one log line why it cannot.
"""
