# services.pangolin-compose: Pangolin's stack (pangolin, gerbil, traefik)
# as the compose project Pangolin's installer writes, run by one systemd
# unit (pangolin-compose.service).
#
# It is not nixpkgs' services.pangolin: that is a native (non-Docker)
# module nixpkgs imports by default
# (nixos/modules/services/networking/pangolin.nix), and its option names
# (services.pangolin.*, services.gerbil.*) must not be declared again.
# This module lives under its own name, asserts that the native one is
# off (both would bind 80, 443 and 51820), and names its units
# pangolin-compose* so they never merge with the native module's
# pangolin/gerbil/traefik units.
#
# Why compose under systemd rather than virtualisation.oci-containers is
# written down in docs/nixos.md ("Why a compose project"). In short: the
# stack keeps upstream's shape (health-gated depends_on, traefik inside
# gerbil's network namespace), and Docker's restart policy owns the
# containers, so haul-agent pauses or stops them through the Docker API
# (services.haul-agent defaults to exactly that).
#
# Everything on the machine comes from here: the compose file, config.yml
# (its secret read from a file at start), traefik's static and dynamic
# config, firewall ports, and the gate that keeps a fresh machine's stack
# down until haul has restored its data or been told there is none.
{
  config,
  lib,
  pkgs,
  ...
}:
let
  inherit (lib)
    mkDefault
    mkEnableOption
    mkIf
    mkOption
    literalExpression
    types
    ;

  cfg = config.services.pangolin-compose;
  agent = config.services.haul-agent or { enable = false; };
  # nixpkgs' native module, when it is part of the evaluation.
  native = config.services.pangolin or { enable = false; };
  yaml = pkgs.formats.yaml { };
  json = pkgs.formats.json { };

  # The defaults below are set leaf by leaf with mkDefault: a mkDefault on
  # a whole settings attrset would be dropped entirely as soon as the user
  # defines any one key in it.
  defaults = v: if lib.isAttrs v then lib.mapAttrs (_: defaults) v else mkDefault v;

  # config.yml goes through the Nix store with this placeholder; the start
  # script puts the secret in its place only in the copy under dataDir
  # (0600), and fails if the placeholder is left anywhere in it.
  secretPlaceholder = "@PANGOLIN_SERVER_SECRET@";

  # A hash of what each container reads from config/, as a label: compose
  # recreates a container whose definition (labels included) changed, so
  # a switch that changes settings recreates Pangolin, one that changes
  # Traefik's files recreates Traefik, and nothing else.
  hashOf = v: builtins.hashString "sha256" (builtins.toJSON v);
  hashLabel = "org.haulproject.pangolin-compose.config-hash";

  composeFile = json.generate "pangolin-compose.json" cfg.compose;
  configTemplate = yaml.generate "pangolin-config.yml" cfg.settings;
  traefikStatic = yaml.generate "traefik_config.yml" cfg.traefik.staticSettings;
  traefikDynamic = yaml.generate "dynamic_config.yml" cfg.traefik.dynamicSettings;

  # The unit refers to these stable paths under /etc, so a changed file
  # changes only the unit's X-Reload-Triggers line: `nixos-rebuild switch`
  # then reloads the unit (prepare + `compose up`) instead of restarting it
  # (`down` + `up`, every tunnel dropped).
  etcDir = "pangolin-compose";
  composeEtc = "/etc/${etcDir}/compose.json";
  prepareEtc = "/etc/${etcDir}/prepare";

  compose = lib.escapeShellArgs [
    "${pkgs.docker-compose}/bin/docker-compose"
    "--project-name"
    cfg.composeProject
    "--file"
    composeEtc
    "--project-directory"
    cfg.dataDir
  ];

  # Runs before every start and reload; see the start script's own text
  # for what it does (../lib/pangolin-compose-prepare.nix).
  prepare = pkgs.writeShellScript "pangolin-compose-prepare" (
    import ../lib/pangolin-compose-prepare.nix {
      inherit lib secretPlaceholder;
      inherit (cfg) dataDir secretFile generateSecret;
      path = [ pkgs.coreutils pkgs.gnugrep pkgs.yq pkgs.jq ];
      yq = "${pkgs.yq}/bin/yq";
      configTemplate = "${configTemplate}";
      traefikStatic = "${traefikStatic}";
      traefikDynamic = "${traefikDynamic}";
    }
  );

  imageOption =
    name: example:
    mkOption {
      type = types.strMatching ".+@sha256:[0-9a-f]{64}";
      inherit example;
      description = ''
        The ${name} image, pinned by digest (`name:tag@sha256:…`), so a
        rebuild runs exactly the image the backup was taken with. There is
        no default: look the digest up when you choose a version, for
        example with `docker buildx imagetools inspect ${lib.head (lib.splitString "@" example)}`.
      '';
    };
in
{
  options.services.pangolin-compose = {
    enable = mkEnableOption "Pangolin's stack (pangolin, gerbil, traefik) as a Docker compose project run by systemd";

    dataDir = mkOption {
      type = types.str;
      default = "/var/lib/pangolin";
      description = ''
        The compose project directory. Everything the stack keeps lives in
        its `config/` subdirectory, laid out as Pangolin's installer lays it
        out (config.yml, db/db.sqlite, key, letsencrypt/acme.json,
        traefik/, logs/). This is the directory haul backs up.
      '';
    };

    composeProject = mkOption {
      type = types.str;
      default = "pangolin";
      description = "Compose project name; containers carry the label com.docker.compose.project with it, which haul-agent quiesces by.";
    };

    dashboardDomain = mkOption {
      type = types.str;
      example = "pangolin.example.com";
      description = "Host name of Pangolin's dashboard; also the endpoint Newt clients reach Gerbil at.";
    };

    baseDomain = mkOption {
      type = types.str;
      example = "example.com";
      description = "Domain under which Pangolin publishes resources.";
    };

    letsEncryptEmail = mkOption {
      type = types.str;
      example = "admin@example.com";
      description = "Contact address for Let's Encrypt, used by Traefik's certificate resolver.";
    };

    secretFile = mkOption {
      type = types.str;
      default = "${cfg.dataDir}/config/server-secret";
      defaultText = literalExpression ''"''${config.services.pangolin-compose.dataDir}/config/server-secret"'';
      example = "/run/secrets/pangolin-server-secret";
      description = ''
        File holding Pangolin's server.secret (letters and digits, one
        line). It is read at each start and put into config.yml under
        dataDir (0600); it never enters the Nix store. The default lives
        with the data, so backups and restores carry it: Pangolin encrypts
        stored values with it, so a rebuilt VPS needs the same one.
      '';
    };

    generateSecret = mkOption {
      type = types.bool;
      default = true;
      description = "Create secretFile with a random secret on the first start when it does not exist (a fresh install). Turn off when a secrets manager provides it.";
    };

    images = {
      pangolin = imageOption "Pangolin" "docker.io/fosrl/pangolin:1.10.3@sha256:<64 hex digits>";
      gerbil = imageOption "Gerbil" "docker.io/fosrl/gerbil:1.2.1@sha256:<64 hex digits>";
      traefik = imageOption "Traefik" "docker.io/traefik:v3.6@sha256:<64 hex digits>";
    };

    badgerVersion = mkOption {
      type = types.str;
      default = "v1.3.1";
      description = "Version of Pangolin's Badger plugin that Traefik loads (the version Pangolin's installer pins).";
    };

    gerbilArgs = mkOption {
      type = types.listOf types.str;
      default = [
        "--reachableAt=http://gerbil:3004"
        "--generateAndSaveKeyTo=/var/config/key"
        "--remoteConfig=http://pangolin:3001/api/v1/"
      ];
      description = ''
        Gerbil's command line, as Pangolin's installer writes it for
        current releases. Gerbil generates its WireGuard key into
        config/key only when that file is missing, which is why the stack
        waits for haul's ready marker on a fresh machine.
      '';
    };

    readyMarker = mkOption {
      type = types.nullOr types.str;
      default = if agent.enable then agent.readyMarker else null;
      defaultText = literalExpression ''if config.services.haul-agent.enable then config.services.haul-agent.readyMarker else null'';
      description = ''
        The stack starts only once this file exists. haul-agent writes it
        after restoring the data, or `haul-agent mark-ready` on a fresh
        install with nothing to restore. Started on a fresh machine before
        its data is back, Gerbil would make a new WireGuard key and
        Pangolin would register a duplicate exit node. null starts the
        stack at boot without waiting.
      '';
    };

    # As nixpkgs' modules do (services.pangolin.openFirewall is a
    # mkEnableOption there too): off unless asked for. The Hetzner host
    # sets it.
    openFirewall = mkEnableOption "opening TCP 80 and 443 (Traefik, published by Gerbil) and UDP 51820 and 21820 (WireGuard for sites and clients) in the firewall";

    enableIPv6 = mkOption {
      type = types.bool;
      default = false;
      description = ''
        Give the compose network IPv6 (`enable_ipv6: true`), as Pangolin's
        installer does when asked to. Needs IPv6 in Docker's daemon
        configuration (virtualisation.docker.daemon.settings, for example
        `ipv6 = true; fixed-cidr-v6 = "fd00::/80";`).
      '';
    };

    gerbilDNS = mkOption {
      type = types.listOf types.str;
      default = [ "8.8.8.8" ];
      description = "DNS servers of the Gerbil container (compose `dns:`), as Pangolin's installer sets them.";
    };

    settings = mkOption {
      type = yaml.type;
      default = { };
      example = literalExpression ''{ app.log_level = "debug"; flags.disable_signup_without_invite = false; }'';
      description = ''
        Pangolin's config.yml, merged over the defaults this module derives
        from the options above (each default is a mkDefault, so any one
        key can be overridden). Do not put server.secret here: everything
        in settings lands world-readable in the Nix store; use secretFile.
        See https://docs.pangolin.net for the keys.
      '';
    };

    traefik = {
      staticSettings = mkOption {
        type = yaml.type;
        default = { };
        description = "Traefik's static configuration (config/traefik/traefik_config.yml), merged over the installer's defaults.";
      };
      dynamicSettings = mkOption {
        type = yaml.type;
        default = { };
        description = "Traefik's file-provider configuration (config/traefik/dynamic_config.yml), merged over the installer's defaults.";
      };
    };

    compose = mkOption {
      type = json.type;
      default = { };
      description = ''
        The compose file, merged over this module's rendering of Pangolin's
        installer template. Use it to add a service (CrowdSec) or change
        one; the project name and directory come from composeProject and
        dataDir.
      '';
    };
  };

  config = mkIf cfg.enable {
    assertions = [
      {
        assertion = cfg.settings.server.secret or null == secretPlaceholder;
        message = "services.pangolin-compose.settings.server.secret is set: anything in settings is world-readable in the Nix store. Put the secret in the file named by services.pangolin-compose.secretFile instead.";
      }
      {
        assertion = !native.enable;
        message = "services.pangolin-compose and nixpkgs' native services.pangolin are both enabled: both would run Pangolin, Gerbil and Traefik on ports 80, 443 and 51820. Enable one of them.";
      }
      {
        assertion = lib.hasPrefix "/" cfg.dataDir && lib.hasPrefix "/" cfg.secretFile;
        message = "services.pangolin-compose.dataDir and secretFile must be absolute paths.";
      }
      {
        assertion = cfg.readyMarker == null || !(lib.hasPrefix (cfg.dataDir + "/") cfg.readyMarker);
        message = "services.pangolin-compose.readyMarker ${toString cfg.readyMarker} is inside dataDir: a restore replaces that directory, so the gate would come and go with the data. Keep the marker in haul-agent's state dir.";
      }
    ];

    warnings = lib.optional (cfg.readyMarker == null) ''
      services.pangolin-compose.readyMarker is null: the stack starts at boot even on a freshly rebuilt machine whose data has not been restored yet, where Gerbil would generate a new WireGuard key. Enable services.haul-agent (or set readyMarker) to gate the first start.
    '';

    virtualisation.docker.enable = true;
    # Gerbil creates WireGuard interfaces; load the module on the host so
    # the container does not have to (it still gets SYS_MODULE, as upstream).
    boot.kernelModules = [ "wireguard" ];
    # Gerbil routes client traffic; Docker usually turns this on as well.
    boot.kernel.sysctl."net.ipv4.ip_forward" = mkDefault 1;

    networking.firewall = mkIf cfg.openFirewall {
      allowedTCPPorts = [ 80 443 ];
      allowedUDPPorts = [ 51820 21820 ];
    };

    services.pangolin-compose.settings = defaults {
      gerbil = {
        start_port = 51820;
        base_endpoint = cfg.dashboardDomain;
      };
      app = {
        dashboard_url = "https://${cfg.dashboardDomain}";
        log_level = "info";
        telemetry.anonymous_usage = false;
      };
      domains.domain1.base_domain = cfg.baseDomain;
      server = {
        secret = secretPlaceholder;
        cors = {
          origins = [ "https://${cfg.dashboardDomain}" ];
          methods = [ "GET" "POST" "PUT" "DELETE" "PATCH" ];
          allowed_headers = [ "X-CSRF-Token" "Content-Type" ];
          credentials = false;
        };
      };
      flags = {
        require_email_verification = false;
        disable_signup_without_invite = true;
        disable_user_create_org = false;
        allow_raw_resources = true;
      };
    };

    services.pangolin-compose.traefik.staticSettings = defaults {
      api = {
        insecure = true;
        dashboard = true;
      };
      providers = {
        http = {
          endpoint = "http://pangolin:3001/api/v1/traefik-config";
          pollInterval = "5s";
        };
        file.filename = "/etc/traefik/dynamic_config.yml";
      };
      experimental.plugins.badger = {
        moduleName = "github.com/fosrl/badger";
        version = cfg.badgerVersion;
      };
      # Rotation as the installer sets it (sizes in MB, age in days).
      log = {
        level = "INFO";
        format = "common";
        maxSize = 100;
        maxBackups = 3;
        maxAge = 3;
        compress = true;
      };
      certificatesResolvers.letsencrypt.acme = {
        httpChallenge.entryPoint = "web";
        email = cfg.letsEncryptEmail;
        storage = "/letsencrypt/acme.json";
        caServer = "https://acme-v02.api.letsencrypt.org/directory";
      };
      entryPoints = {
        web.address = ":80";
        websecure = {
          address = ":443";
          transport.respondingTimeouts.readTimeout = "30m";
          http3.advertisedPort = 443;
          http = {
            tls.certResolver = "letsencrypt";
            # Traefik v3.6 rejects encoded slashes and question marks by
            # default; Pangolin's resources need them (as its installer sets).
            encodedCharacters = {
              allowEncodedSlash = true;
              allowEncodedQuestionMark = true;
            };
            middlewares = [ "compress@file" ];
          };
        };
      };
      serversTransport.insecureSkipVerify = true;
      ping.entryPoint = "web";
    };

    services.pangolin-compose.traefik.dynamicSettings = defaults (
      let
        router = rule: service: {
          inherit rule service;
          entryPoints = [ "websecure" ];
          middlewares = [ "badger" ];
          tls.certResolver = "letsencrypt";
        };
        host = "Host(`${cfg.dashboardDomain}`)";
      in
      {
        http = {
          middlewares = {
            badger.plugin.badger.disableForwardAuth = true;
            redirect-to-https.redirectScheme.scheme = "https";
            compress.compress = { };
          };
          routers = {
            main-app-router-redirect = {
              rule = host;
              service = "next-service";
              entryPoints = [ "web" ];
              middlewares = [ "redirect-to-https" "badger" ];
            };
            next-router = router "${host} && !PathPrefix(`/api/v1`)" "next-service";
            api-router = router "${host} && PathPrefix(`/api/v1`)" "api-service";
            ws-router = router host "api-service";
          };
          services = {
            next-service.loadBalancer.servers = [ { url = "http://pangolin:3002"; } ];
            api-service.loadBalancer.servers = [ { url = "http://pangolin:3000"; } ];
          };
        };
        # For resources that ask Pangolin to send the PROXY protocol.
        tcp.serversTransports = {
          pp-transport-v1.proxyProtocol.version = 1;
          pp-transport-v2.proxyProtocol.version = 2;
        };
      }
    );

    # Pangolin's installer template, with images pinned and paths relative
    # to dataDir (the project directory).
    services.pangolin-compose.compose = defaults {
      name = cfg.composeProject;
      services = {
        pangolin = {
          image = cfg.images.pangolin;
          container_name = "pangolin";
          restart = "unless-stopped";
          volumes = [ "./config:/app/config" ];
          labels.${hashLabel} = hashOf cfg.settings;
          healthcheck = {
            test = [ "CMD" "curl" "-f" "http://localhost:3001/api/v1/" ];
            interval = "10s";
            timeout = "10s";
            retries = 15;
          };
        };
        gerbil = {
          image = cfg.images.gerbil;
          container_name = "gerbil";
          restart = "unless-stopped";
          depends_on.pangolin.condition = "service_healthy";
          command = cfg.gerbilArgs;
          dns = cfg.gerbilDNS;
          volumes = [ "./config/:/var/config" ];
          cap_add = [ "NET_ADMIN" "SYS_MODULE" ];
          devices = [ "/dev/net/tun:/dev/net/tun" ];
          # Traefik shares Gerbil's network namespace, so its ports are
          # published here.
          ports = [
            "51820:51820/udp"
            "21820:21820/udp"
            "443:443"
            "80:80"
          ];
        };
        traefik = {
          image = cfg.images.traefik;
          container_name = "traefik";
          restart = "unless-stopped";
          network_mode = "service:gerbil";
          depends_on.pangolin.condition = "service_healthy";
          command = [ "--configFile=/etc/traefik/traefik_config.yml" ];
          labels.${hashLabel} = hashOf [ cfg.traefik.staticSettings cfg.traefik.dynamicSettings ];
          volumes = [
            "./config/traefik:/etc/traefik:ro"
            "./config/letsencrypt:/letsencrypt"
            "./config/traefik/logs:/var/log/traefik"
          ];
        };
      };
      networks.default = {
        driver = "bridge";
        name = cfg.composeProject;
      }
      // lib.optionalAttrs cfg.enableIPv6 { enable_ipv6 = true; };
    };

    environment.etc."${etcDir}/compose.json".source = composeFile;
    environment.etc."${etcDir}/prepare".source = prepare;

    # One unit for the project. It does not supervise the containers:
    # Docker's restart policy does, which is why haul-agent may stop them
    # through Docker without systemd starting them again behind its back.
    systemd.services.pangolin-compose = {
      description = "Pangolin stack (docker compose project ${cfg.composeProject})";
      wantedBy = [ "multi-user.target" ];
      # wants, not requires (as nixpkgs' oci-containers does): a restart
      # of docker.service must not propagate into `compose down` of the
      # whole stack. Docker's restart policy brings the containers back
      # with the daemon.
      wants = [ "docker.service" "network-online.target" ];
      # After the guard's boot run, so containers an interrupted backup
      # left stopped are dealt with before compose looks at them.
      after = [ "docker.service" "network-online.target" "haul-agent-recover.service" ];
      unitConfig = lib.optionalAttrs (cfg.readyMarker != null) {
        ConditionPathExists = cfg.readyMarker;
      };
      # The unit file names only the stable /etc paths; what changes on a
      # switch is this list, so switch-to-configuration reloads the unit
      # (prepare + `up`: compose recreates exactly the containers whose
      # definition or config hash label changed) instead of restarting it.
      reloadTriggers = [
        "${composeFile}"
        "${prepare}"
      ];
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        # Image pulls on first start, then Pangolin's health check (up to
        # 15 x 10s) before gerbil and traefik start.
        TimeoutStartSec = "15min";
        ExecStartPre = prepareEtc;
        ExecStart = "${compose} up --detach --remove-orphans --wait";
        ExecReload = [
          prepareEtc
          "${compose} up --detach --remove-orphans --wait"
        ];
        # Remove the containers (the data is all in bind mounts): at the
        # next boot this unit, not Docker's restart policy, starts the
        # stack, after the guard and only once the ready marker exists.
        ExecStop = "${compose} down";
      };
    };

    # The marker appears at run time (after a restore, or mark-ready): start
    # the stack then, without waiting for a reboot. The path unit starts a
    # oneshot that stays active, and that one asks for the stack once: a
    # path unit pointed at the stack itself would start it again after an
    # operator's `systemctl stop pangolin-compose` (the marker still
    # exists), and again after every failed start.
    systemd.paths.pangolin-compose-ready = mkIf (cfg.readyMarker != null) {
      description = "Start Pangolin once haul's ready marker exists";
      wantedBy = [ "multi-user.target" ];
      pathConfig = {
        PathExists = cfg.readyMarker;
        Unit = "pangolin-compose-ready.service";
      };
    };
    systemd.services.pangolin-compose-ready = mkIf (cfg.readyMarker != null) {
      description = "Start the Pangolin stack once, now that haul's ready marker exists";
      restartIfChanged = false;
      serviceConfig = {
        Type = "oneshot";
        RemainAfterExit = true;
        ExecStart = "${pkgs.systemd}/bin/systemctl start --no-block pangolin-compose.service";
      };
    };
  };
}
