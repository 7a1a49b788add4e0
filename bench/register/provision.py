#!/usr/bin/env python3
"""Writes the benchmark's phones: one SQL file that inserts N users with one phone each (for
sqlite3 or psql, run in one transaction), and SIPp injection files with their credentials.

    provision.py N REALM OUT_DIR [PARTS]

OUT_DIR/users.sql         INSERTs for `users` and `phones` (columns of migrations/*/0001_directory.sql)
OUT_DIR/users.csv         every phone: username;[authentication username=.. password=..]
                          (SIPp -inf format, SEQUENTIAL; field1 expands to the Authorization header)
OUT_DIR/users_<i>.csv     the same phones split into PARTS disjoint parts (one per SIPp instance)

HA1 values are what src/sip/auth.rs `ha1` computes: hex(H("user:realm:password")) with MD5 and
SHA-256. Passwords are random, one per phone. Usernames are bench<extension>, extensions
100000.. so they cannot clash with anything a person would type.
"""

import hashlib
import os
import secrets
import sys
import time


def main() -> None:
    n = int(sys.argv[1])
    realm = sys.argv[2]
    out = sys.argv[3]
    parts = int(sys.argv[4]) if len(sys.argv) > 4 else 2
    os.makedirs(out, exist_ok=True)
    now = int(time.time() * 1000)
    phones = []
    for i in range(n):
        ext = str(100000 + i)
        user = f"bench{ext}"
        password = secrets.token_hex(8)
        md5 = hashlib.md5(f"{user}:{realm}:{password}".encode()).hexdigest()
        sha = hashlib.sha256(f"{user}:{realm}:{password}".encode()).hexdigest()
        phones.append((ext, user, password, md5, sha))

    with open(os.path.join(out, "users.sql"), "w") as f:
        # psql -1 / sqlite3 each wrap the file; BEGIN/COMMIT here too so either client works alone.
        f.write("BEGIN;\n")
        for ext, user, _, _, _ in phones:
            f.write(
                "INSERT INTO users (extension, display_name, email, created_at) VALUES "
                f"('{ext}', 'Bench {ext}', '{user}@bench.invalid', {now});\n"
            )
        for ext, user, _, md5, sha in phones:
            f.write(
                "INSERT INTO phones (user_id, sip_username, name, realm, ha1_md5, ha1_sha256, "
                f"created_at) VALUES ((SELECT id FROM users WHERE extension = '{ext}'), "
                f"'{user}', 'Bench phone', '{realm}', '{md5}', '{sha}', {now});\n"
            )
        f.write("COMMIT;\n")

    def write_csv(path: str, rows) -> None:
        with open(path, "w") as f:
            f.write("SEQUENTIAL\n")
            for _, user, password, _, _ in rows:
                # SIPp 3.6 does not expand [field0] inside [authentication ...] in the scenario,
                # but expands an [authentication ...] keyword that comes from the injection file.
                f.write(f"{user};[authentication username={user} password={password}]\n")

    write_csv(os.path.join(out, "users.csv"), phones)
    for p in range(parts):
        write_csv(os.path.join(out, f"users_{p}.csv"), phones[p::parts])


if __name__ == "__main__":
    main()
