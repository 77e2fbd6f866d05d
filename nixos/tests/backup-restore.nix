# NixOS VM test: a VPS with services.haul-agent and a container writing to
# its data, a fresh VPS with the same configuration and no data (a rebuilt
# machine), and a NAS with haul. The NAS pulls a snapshot over SSH with the
# backup key (the container is paused for the sync and running again
# after); the backup key is refused a restore; a restore onto the running,
# ready VPS is refused; the snapshot restored onto the fresh VPS, and into a
# directory on the NAS, matches the VPS's data file for file: content,
# mode, owner, link target. The fresh VPS is then marked ready.
#
# Run with `nix build .#checks.x86_64-linux.backup-restore` (needs KVM, and
# network access to fetch nixpkgs). The keys under ./keys are for this test
# only and are public.
{
  haulPackages,
  agentModule,
}:
{ lib, ... }:
let
  keyFile = name: lib.fileContents (./keys + "/${name}.pub");

  vpsNode =
    { pkgs, ... }:
    let
      # A container that keeps writing to the data, so the freeze has
      # something to pause. Built by Nix: the test has no registry.
      writer = pkgs.dockerTools.buildImage {
        name = "writer";
        tag = "test";
        copyToRoot = [ pkgs.busybox ];
        config.Cmd = [
          "/bin/sh"
          "-c"
          "mkdir -p /data/log; while true; do date >> /data/log/writes; sleep 0.2; done"
        ];
      };
    in
    {
      imports = [ agentModule ];
      virtualisation.memorySize = 1024;
      virtualisation.docker.enable = true;
      services.openssh.enable = true;
      services.haul-agent = {
        enable = true;
        dataPaths = [ "/var/lib/app" ];
        # As with Pangolin: every container of the compose project (here
        # one, labelled by hand) is paused for the sync.
        quiesce = {
          mode = "pause";
          composeProject = "app";
        };
        backupKeys = [ (keyFile "backup") ];
        restoreKeys = [ (keyFile "restore") ];
      };
      environment.etc."writer-image.tar.gz".source = writer;
    };
in
{
  name = "haul-backup-restore";

  nodes = {
    vps = vpsNode;
    # The same configuration on a machine with nothing on it yet.
    vps2 = vpsNode;

    nas =
      { pkgs, ... }:
      {
        environment.systemPackages = [
          haulPackages.haul
          pkgs.openssh
        ];
        environment.etc = {
          "haul/haul.toml".text = ''
            repository = "/var/lib/haul/repo"
            password_file = "/etc/haul/password"
            cache_dir = "/var/lib/haul/cache"

            [[hosts]]
            name = "vps"
            address = "vps:22"
            user = "root"
            identity_file = "/etc/haul/backup_key"
            restore_identity_file = "/etc/haul/restore_key"
            known_hosts = "/etc/haul/known_hosts"

            [[hosts]]
            name = "vps2"
            address = "vps2:22"
            user = "root"
            identity_file = "/etc/haul/backup_key"
            restore_identity_file = "/etc/haul/restore_key"
            known_hosts = "/etc/haul/known_hosts"
          '';
          "haul/password".text = "test only, not a secret";
          "haul/backup_key" = {
            source = ./keys/backup;
            mode = "0600";
          };
          "haul/restore_key" = {
            source = ./keys/restore;
            mode = "0600";
          };
        };
        systemd.tmpfiles.rules = [ "d /var/lib/haul 0700 root root -" ];
        # How a NixOS NAS would run the puller (add a timer for a schedule);
        # the test starts it by hand.
        systemd.services.haul-backup = {
          description = "haul: pull snapshots from the VPS";
          serviceConfig = {
            Type = "oneshot";
            ExecStart = "${haulPackages.haul}/bin/haul --config /etc/haul/haul.toml backup";
          };
        };
      };
  };

  testScript = ''
    # Lists every node under a directory with its type, mode, owner and
    # link target, then every file's SHA-256: equal listings mean equal
    # trees (directory sizes are left out: they depend on the file system).
    # The writer's log changes all the time and is left out.
    def tree(machine, root):
        return machine.succeed(
            f"cd {root} && "
            "find . -path ./log -prune -o -printf '%p %y %m %U:%G %l\\n' | sort && "
            "find . -path ./log -prune -o -type f -print0 | sort -z | xargs -0 sha256sum"
        )

    start_all()

    with subtest("the VPS has data and a container writing to it"):
        vps.wait_for_unit("docker.service")
        vps.wait_for_unit("sshd.service")
        vps.succeed(
            "mkdir -p /var/lib/app/config/db /var/lib/app/config/letsencrypt",
            "head -c 3000000 /dev/urandom > /var/lib/app/config/db/db.sqlite",
            "echo '{\"letsencrypt\": {}}' > /var/lib/app/config/letsencrypt/acme.json",
            "chmod 0600 /var/lib/app/config/letsencrypt/acme.json",
            "echo 'not a real key' > /var/lib/app/config/key && chown 1234:1234 /var/lib/app/config/key",
            "ln -s db/db.sqlite /var/lib/app/config/current",
            "docker load < /etc/writer-image.tar.gz",
            "docker run -d --name writer --label com.docker.compose.project=app -v /var/lib/app:/data writer:test",
        )
        vps.wait_until_succeeds("test -s /var/lib/app/log/writes")

    with subtest("the module's guard unit and ready marker agree with the agent"):
        vps.succeed("haul-agent check-config --config /etc/haul-agent/config.json")
        vps.succeed("systemctl start haul-agent-recover.service")
        vps.succeed("haul-agent mark-ready --config /etc/haul-agent/config.json")
        vps.succeed("test -f /var/lib/haul-agent/ready")
        vps.succeed("test $(stat -c %a /var/lib/haul-agent) = 700")

    with subtest("the NAS pins the VPS's host key and creates its repository"):
        nas.wait_for_unit("multi-user.target")
        vps2.wait_for_unit("sshd.service")
        for host in ["vps", "vps2"]:
            nas.wait_until_succeeds(f"ssh-keyscan -t ed25519 {host} > /tmp/{host}.key && test -s /tmp/{host}.key")
        nas.succeed("cat /tmp/vps.key /tmp/vps2.key > /etc/haul/known_hosts")
        nas.succeed("haul --config /etc/haul/haul.toml init")

    with subtest("the NAS's keys run the agent and nothing else"):
        ssh = "ssh -o BatchMode=yes -o UserKnownHostsFile=/etc/haul/known_hosts root@vps"
        out = nas.fail(f"{ssh} -i /etc/haul/backup_key 'cat /etc/shadow' 2>&1")
        assert "refused" in out, out
        out = nas.fail(f"{ssh} -i /etc/haul/backup_key restore 2>&1 </dev/null")
        assert "restore refused" in out, out
        out = nas.succeed(f"{ssh} -i /etc/haul/backup_key version </dev/null")
        assert out.startswith("haul-agent "), out

    with subtest("a backup over SSH, with the container paused only for the sync"):
        nas.succeed("systemctl start haul-backup.service")
        out = nas.succeed("haul --config /etc/haul/haul.toml snapshots --host vps")
        assert "vps" in out, out
        status = vps.succeed("docker inspect -f '{{.State.Status}}' writer").strip()
        assert status == "running", f"writer is {status} after the backup"
        vps.succeed("test ! -e /var/lib/haul-agent/frozen.json")

    want = tree(vps, "/var/lib/app")

    with subtest("a restore onto the running VPS is refused: it is marked ready"):
        nas.fail("haul --config /etc/haul/haul.toml restore --host vps")
        got = tree(vps, "/var/lib/app")
        assert got == want, f"a refused restore changed the data:\n{got}"

    with subtest("the snapshot restored onto the fresh VPS is the VPS's data"):
        vps2.succeed("test ! -e /var/lib/haul-agent/ready")
        nas.succeed("haul --config /etc/haul/haul.toml restore --host vps --to vps2")
        got = tree(vps2, "/var/lib/app")
        assert got == want, f"restored tree differs:\n--- vps\n{want}\n--- vps2\n{got}"
        vps2.succeed("test $(stat -c %a /var/lib/app/config/letsencrypt/acme.json) = 600")
        # The restore marks the machine ready: a stack gated like
        # services.pangolin-compose would start now.
        vps2.succeed("test -f /var/lib/haul-agent/ready")

    with subtest("the snapshot restored into a directory on the NAS is the VPS's data"):
        nas.succeed("haul --config /etc/haul/haul.toml restore --host vps --target /tmp/restored")
        got = tree(nas, "/tmp/restored/var/lib/app")
        assert got == want, f"restored tree differs:\n--- vps\n{want}\n--- restored\n{got}"
        nas.succeed("test $(stat -c %a /tmp/restored/var/lib/app/config/letsencrypt/acme.json) = 600")
  '';
}
