"""A real SSH server with SFTP on 127.0.0.1, for the remote round-trip test.

    python tests/_sftp_server.py --host-key <file> --authorized-keys <file>

asyncssh's server (asyncssh is what dvc-ssh's client runs on, so it is installed
with it): public-key authentication against ``--authorized-keys`` only, SFTP
only (no shell, no exec), on a free port that it prints as its first line of
stdout. It serves until it is terminated or its stdin closes.
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import asyncssh


async def serve(host_key: str, authorized_keys: str) -> None:
    server = await asyncssh.listen(
        "127.0.0.1", 0, server_host_keys=[host_key], authorized_client_keys=authorized_keys,
        sftp_factory=asyncssh.SFTPServer, allow_scp=False, password_auth=False, kbdint_auth=False)
    print(server.sockets[0].getsockname()[1], flush=True)
    # stdin closing (the test process ending, however it ends) stops the server too
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    server.close()
    await server.wait_closed()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host-key", required=True)
    parser.add_argument("--authorized-keys", required=True)
    args = parser.parse_args(argv)
    asyncio.run(serve(args.host_key, args.authorized_keys))


if __name__ == "__main__":
    main()
