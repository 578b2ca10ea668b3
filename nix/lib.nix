# The rollout Nix library: the same interface as deploy-rs's `lib.<system>`, so a flake moves
# from deploy-rs to rollout by changing its input and nothing else.
#
#   activate.{custom,nixos,home-manager,darwin,noop}   build an "activatable" profile closure
#   setActivate                                         deprecated alias of activate.custom
#   deployChecks deploy                                 { deploy-schema; deploy-activate; }
#   deployIssues deploy                                 (rollout extra) the schema errors as a list
#   deployWarnings deploy                               (rollout extra) what deploy-rs would ignore
#
# Closure layout (the profile contract, shared with deploy-rs):
#   /deploy-rs-activate  run on the target with PROFILE=<profile>, cwd = the profile and
#                        DRY_ACTIVATE=1 (dry run), BOOT=1 (activate on next boot) or neither (switch)
#   /rollout-agent       the rollout-agent built for the profile's system; the deployer prefers it
#                        over the agent it would otherwise copy to the target
#   /activate-rs         deploy-rs's activate/wait/revoke protocol (nix/activate-rs.sh), so deploy-rs
#                        can deploy, confirm and roll back the profile too: rollout never runs it
#   /rollout-confirmed   (optional) run by the agent once a deploy is confirmed. With
#                        ROLLOUT_CONFIRM_PENDING=1 the activation makes the profile live without
#                        making it the boot default yet; this hook does that (reboot-safe window)
#
# Only these pkgs attributes are used, so the library can be exercised with a stub pkgs
# (nix/tests/stub-pkgs.nix): buildEnv, writeTextFile, writeScript, runtimeShell, runCommand.
{ pkgs, rollout }:

let
  inherit (builtins)
    attrNames concatMap concatStringsSep elem elemAt filter foldl' genList isAttrs isBool isInt
    isList isString length match replaceStrings stringLength substring typeOf
    unsafeDiscardStringContext;

  # ---------------------------------------------------------------- activation -------------

  # Single-quote a string for the shell.
  shellQuote = s: "'" + replaceStrings [ "'" ] [ "'\\''" ] s + "'";

  agentLink = pkgs.runCommand "rollout-agent-link" { } ''
    mkdir -p "$out"
    ln -s ${rollout}/bin/rollout-agent "$out/rollout-agent"
  '';

  # deploy-rs's target-side protocol (activate/wait/revoke) in a shell script, so deploy-rs can
  # still deploy, confirm and roll back a profile built with this library (going back, or mixing
  # the two tools). rollout itself never runs it.
  activateRsShim = pkgs.writeTextFile {
    name = "rollout-activate-rs-shim";
    executable = true;
    destination = "/activate-rs";
    text = "#!${pkgs.runtimeShell}\n" + builtins.readFile ./activate-rs.sh;
  };

  custom = {
    # `self` is the attrset this functor was called through, so
    # `(activate.custom // { dryActivate = "…"; boot = "…"; }) base "script"` picks up the overrides.
    __functor = self: base: activate:
      let
        activateScript = pkgs.writeScript "activate" activate;
        # Default for dry-activate and boot: show what would run, do nothing.
        dryActivate = self.dryActivate or "echo ${activateScript}";
        boot = self.boot or "echo ${activateScript}";
        confirmedHook = if self ? confirmed then [
          (pkgs.writeTextFile {
            name = base.name + "-rollout-confirmed";
            executable = true;
            destination = "/rollout-confirmed";
            text = ''
              #!${pkgs.runtimeShell}
              set -euo pipefail
              :
              ${self.confirmed}
            '';
          })
        ] else [ ];
        # The `:` lines keep each branch valid when a script is empty. The scripts are inserted
        # unindented so here-documents in them keep working.
        entry = pkgs.writeTextFile {
          name = base.name + "-activate-path";
          executable = true;
          destination = "/deploy-rs-activate";
          text = ''
            #!${pkgs.runtimeShell}
            set -euo pipefail

            if [ "''${DRY_ACTIVATE:-0}" = 1 ]; then
            :
            ${dryActivate}
            elif [ "''${BOOT:-0}" = 1 ]; then
            :
            ${boot}
            else
            :
            ${activate}
            fi
          '';
        };
      in
      pkgs.buildEnv {
        name = "activatable-" + base.name;
        paths = [ base entry agentLink activateRsShim ] ++ confirmedHook;
      };
  };

  # systemd-boot keeps a `default` line in loader.conf that pins the boot entry chosen at install
  # time, so a new generation would never become the default (deploy-rs #31). deploy-rs removes it
  # after `switch` only; rollout also does it after `boot`, where the next boot is the whole point.
  # A missing loader.conf is not an error.
  loaderFix = config:
    if config.boot.loader.systemd-boot.enable or false then
      let conf = "${config.boot.loader.efi.efiSysMountPoint}/loader/loader.conf"; in
      ''
        if [ -f ${shellQuote conf} ]; then sed -i '/^default /d' ${shellQuote conf}; fi
      ''
    else "";

  # Reboot-safe confirmation window: while rollout waits for the confirmation
  # (ROLLOUT_CONFIRM_PENDING=1) the new system goes live with `test`, which leaves the boot loader
  # alone, so a reboot before the confirmation boots the previous system; the agent runs
  # /rollout-confirmed (`boot`) once the deploy is confirmed. Without rollout's agent (deploy-rs)
  # the variable is unset and it is a plain `switch`.
  nixos = base:
    (custom // {
      dryActivate = ''"$PROFILE/bin/switch-to-configuration" dry-activate'';
      boot = ''
        "$PROFILE/bin/switch-to-configuration" boot
        ${loaderFix base.config}'';
      confirmed = ''
        "$PROFILE/bin/switch-to-configuration" boot
        ${loaderFix base.config}'';
    })
      base.config.system.build.toplevel
      ''
        # switch-to-configuration misbehaves when started from a directory it is about to
        # garbage-collect or unmount (nixpkgs #73404)
        cd /tmp
        if [ "''${ROLLOUT_CONFIRM_PENDING:-0}" = 1 ]; then
        "$PROFILE/bin/switch-to-configuration" test
        else
        "$PROFILE/bin/switch-to-configuration" switch
        ${loaderFix base.config}
        fi'';

  home-manager = base: custom base.activationPackage ''"$PROFILE/activate"'';

  # sudo on macOS keeps the caller's HOME, but nix-darwin's activation needs root's.
  darwin = base: custom base.config.system.build.toplevel ''HOME=/var/root "$PROFILE/activate"'';

  noop = base: custom base ":";

  # ---------------------------------------------------------------- schema ----------------

  genericKeys = [
    "sshUser" "user" "sshOpts" "fastConnection" "autoRollback" "magicRollback" "confirmTimeout"
    "activationTimeout" "tempPath" "interactiveSudo" "sudo" "remoteBuild" "healthChecks"
  ];
  nodeKeys = [ "hostname" "profiles" "profilesOrder" "tags" ];
  profileKeys = [ "path" "profilePath" ];
  ownKeys = { top = [ "nodes" "strict" ]; node = nodeKeys; profile = profileKeys; };

  quoteAttr = name:
    if match "[a-zA-Z_][a-zA-Z0-9_'-]*" name != null then name
    else "\"" + replaceStrings [ "\\" "\"" "$" "\n" "\t" ] [ "\\\\" "\\\"" "\\$" "\\n" "\\t" ] name + "\"";
  child = path: key: path + "." + quoteAttr key;
  # Findings are records: `error` fails the check; `ignored` (a key deploy-rs ignores) is a
  # warning unless `strict = true`; `warning` never fails it (deploy-rs accepts the value).
  issue = path: msg: { kind = "error"; text = "${path}: ${msg}"; };
  note = path: msg: { kind = "warning"; text = "${path}: ${msg}"; };
  ignoredKey = path: what: hint: {
    kind = "ignored";
    text = "${path}: ${what}, ignored" + (if hint == "" then "" else " — ${hint}");
    strictText = "${path}: ${what}" + (if hint == "" then "" else "; ${hint}")
      + " (refused in strict mode: `strict = true` in deploy)";
  };

  describe = v:
    let t = typeOf v; in
    if t == "set" && (v.type or null) == "derivation" then "a derivation"
    else if t == "int" && v < 0 then "a negative integer"
    else {
      bool = "a boolean"; int = "an integer"; float = "a float"; string = "a string";
      list = "a list"; set = "an attribute set"; lambda = "a function"; path = "a path";
      null = "null";
    }.${t} or "a value of type ${t}";
  typeErr = path: expected: v: [ (issue path "expected ${expected}, found ${describe v}") ];

  lower = replaceStrings
    (genList (i: substring i 1 "ABCDEFGHIJKLMNOPQRSTUVWXYZ") 26)
    (genList (i: substring i 1 "abcdefghijklmnopqrstuvwxyz") 26);
  chars = s: genList (i: substring i 1 s) (stringLength s);
  min2 = a: b: if a < b then a else b;
  # Levenshtein distance; the keys are short, so the quadratic list building is fine.
  distance = a: b:
    let
      ca = chars a; cb = chars b; lb = length cb;
      row = prev: i:
        foldl'
          (cur: j: cur ++ [
            (min2 (min2 (elemAt prev j + 1) (elemAt cur (j - 1) + 1))
              (elemAt prev (j - 1) + (if elemAt ca i == elemAt cb (j - 1) then 0 else 1)))
          ])
          [ (i + 1) ]
          (genList (j: j + 1) lb);
    in
    elemAt (foldl' row (genList (j: j) (lb + 1)) (genList (i: i) (length ca))) lb;
  # "; did you mean `x`?" for the closest candidate within about one edit per three characters.
  suggest = word: candidates:
    let
      lw = lower word;
      scored = map (c: { inherit c; d = distance lw (lower c); }) candidates;
      best = foldl' (acc: x: if acc == null || x.d < acc.d then x else acc) null scored;
      limit = let l = stringLength word / 3; in if l < 1 then 1 else l;
    in
    if best != null && best.d <= limit then "; did you mean `${best.c}`?" else "";

  # [ what hint ] for a key deploy-rs would ignore at this level.
  unknownKey = key: level:
    if elem key nodeKeys && level != "node" then
      [ "`${key}` is a node setting, not allowed here" "put it on a node (deploy.nodes.<name>.${key})" ]
    else if elem key profileKeys && level != "profile" then
      [ "`${key}` is a profile setting, not allowed here" "put it on a profile" ]
    else if elem key ownKeys.top then
      [ "`${key}` is only allowed at the top level of `deploy`" "" ]
    else
      let
        valid = genericKeys ++ ownKeys.${level};
        hint = suggest key valid;
      in
      if hint != "" then [ "unknown setting" (substring 2 (stringLength hint - 2) hint) ]
      else [ "unknown setting" "valid settings here: ${concatStringsSep ", " valid}" ];

  # Values shown in messages lose their string context: the schema check must never depend on
  # (and so build) the profiles it describes.
  show = s: "`" + unsafeDiscardStringContext s + "`";

  nonEmptyString = path: v: then':
    if !isString v then typeErr path "a string" v
    else if v == "" then [ (issue path "expected a non-empty string, found an empty string") ]
    else then' (unsafeDiscardStringContext v);
  # Host and user names become single command-line words.
  word = path: what: s:
    if match ".*[[:space:]].*" s != null then [ (issue path "expected ${what}, found ${show s}, which contains whitespace") ]
    else if substring 0 1 s == "-" then [ (issue path "expected ${what}, found ${show s}, which starts with `-`") ]
    else [ ];
  absolute = path: what: s:
    if substring 0 1 s == "/" then [ ] else [ (issue path "expected ${what}, found ${show s}") ];
  boolean = path: v: if isBool v then [ ] else typeErr path "a boolean (true or false)" v;
  seconds = path: v: if isInt v && v >= 0 then [ ] else typeErr path "a non-negative integer (seconds)" v;
  stringList = path: v:
    if !isList v then typeErr path "a list of strings" v
    else concatMap (i: let x = elemAt v i; in if isString x then [ ] else typeErr "${path}[${toString i}]" "a string" x)
      (genList (i: i) (length v));

  genericCheck = {
    sshUser = p: v: nonEmptyString p v (s: word p "a user name" s
      ++ (if match ".*@.*" s != null then [ (issue p "expected a user name without `@`, found ${show s} (the host goes in `hostname`)") ] else [ ]));
    user = p: v: nonEmptyString p v (word p "a user name");
    sudo = p: v: nonEmptyString p v (_: [ ]);
    tempPath = p: v: nonEmptyString p v (absolute p "an absolute path on the target");
    sshOpts = stringList;
    fastConnection = boolean;
    autoRollback = boolean;
    magicRollback = boolean;
    remoteBuild = boolean;
    interactiveSudo = boolean;
    confirmTimeout = seconds;
    activationTimeout = seconds;
  };

  # Generic settings and unknown keys of one level; the level's own keys are checked by the caller.
  # null means unset for every optional setting, as deploy-rs reads them as `Option`.
  checkSettings = path: level: attrs:
    concatMap
      (k:
        let kp = child path k; u = unknownKey k level; in
        if genericCheck ? ${k} then (if attrs.${k} == null then [ ] else genericCheck.${k} kp attrs.${k})
        else if elem k ownKeys.${level} then [ ]
        else [ (ignoredKey kp (elemAt u 0) (elemAt u 1)) ])
      (attrNames attrs);
  present = attrs: k: attrs ? ${k} && attrs.${k} != null;

  checkProfile = path: prof:
    if !isAttrs prof then typeErr path "an attribute set (a profile)" prof
    else
      checkSettings path "profile" prof
      ++ (
        let p = child path "path"; v = prof.path or null; in
        if !(prof ? path) then [ (issue p "missing; every profile needs a `path` (the store path of its activatable closure)") ]
        # A derivation is accepted without forcing its outPath: nothing gets instantiated or built.
        else if isAttrs v && (v ? outPath) then [ ]
        else if isString v then nonEmptyString p v (absolute p "an absolute store path")
        else typeErr p "a store path (a string or a derivation)" v
      )
      ++ (if present prof "profilePath" then nonEmptyString (child path "profilePath") prof.profilePath (_: [ ]) else [ ]);

  checkNode = path: node:
    if !isAttrs node then typeErr path "an attribute set (a node)" node
    else
      let
        ppath = child path "profiles";
        profiles = node.profiles or null;
        names = if isAttrs profiles then attrNames profiles else null;
        opath = child path "profilesOrder";
        order = if present node "profilesOrder" then node.profilesOrder else [ ];
      in
      checkSettings path "node" node
      # An empty hostname is deploy-rs's way of saying "--hostname gives it"; rollout refuses it
      # at deploy time unless --hostname does.
      ++ (if !(node ? hostname) then [ (issue (child path "hostname") "missing; every node needs a `hostname` (string)") ]
          else if node.hostname == "" then [ ]
          else nonEmptyString (child path "hostname") node.hostname (word (child path "hostname") "a host name or address"))
      ++ (if present node "tags" then stringList (child path "tags") node.tags else [ ])
      ++ (if !(node ? profiles) then [ (issue ppath "missing; expected an attribute set of profiles") ]
          else if !isAttrs profiles then typeErr ppath "an attribute set of profiles" profiles
          else if names == [ ] then [ (note ppath "the node has no profiles; nothing is deployed to it") ]
          else concatMap (n: checkProfile (child ppath n) profiles.${n}) names)
      ++ (
        let listErrs = stringList opath order; in
        if listErrs != [ ] then listErrs
        else concatMap
          (i:
            let p = elemAt order i; ip = "${opath}[${toString i}]"; in
            # Both are accepted by deploy-rs (a duplicate is dropped; a missing name only fails a
            # deploy of the whole node, which rollout refuses at plan time too).
            if length (filter (x: x == p) (genList (j: elemAt order j) i)) > 0 then
              [ (note ip "`${p}` is listed twice; the later entry is ignored") ]
            else if names != null && !(elem p names) then
              [ (note ip "no profile named `${p}`${suggest p names}; profiles: ${concatStringsSep ", " (map quoteAttr names)}") ]
            else [ ])
          (genList (i: i) (length order))
      );

  findings = deploy:
    if !isAttrs deploy then typeErr "deploy" "an attribute set" deploy
    else
      checkSettings "deploy" "top" deploy
      ++ (if present deploy "strict" then boolean "deploy.strict" deploy.strict else [ ])
      ++ (
        let nodes = deploy.nodes or null; in
        if !(deploy ? nodes) then [ (issue "deploy.nodes" "missing; expected an attribute set of nodes") ]
        else if !isAttrs nodes then typeErr "deploy.nodes" "an attribute set of nodes" nodes
        else concatMap (n: checkNode (child "deploy.nodes" n) nodes.${n}) (attrNames nodes)
      );

  strictOf = deploy: isAttrs deploy && (deploy.strict or false) == true;

  deployIssues = deploy:
    let strict = strictOf deploy; in
    concatMap
      (f: if f.kind == "error" then [ f.text ] else if f.kind == "ignored" && strict then [ f.strictText ] else [ ])
      (findings deploy);

  deployWarnings = deploy:
    let strict = strictOf deploy; in
    concatMap
      (f: if f.kind == "warning" || (f.kind == "ignored" && !strict) then [ f.text ] else [ ])
      (findings deploy);

  # ---------------------------------------------------------------- checks ----------------

  deployChecks = deploy: {
    # Pure-Nix validation. Unlike deploy-rs's (check-jsonschema over `builtins.toJSON deploy`,
    # which carries every profile's string context and so builds every profile first), this
    # derivation has no inputs: it costs one evaluation of the `deploy` tree and no builds.
    # Warnings (keys deploy-rs would ignore, …) are traced when the check is evaluated and
    # printed in its build log; they fail it only with `strict = true`.
    deploy-schema =
      let
        issues = unsafeDiscardStringContext (concatStringsSep "\n" (deployIssues deploy));
        warnings = map unsafeDiscardStringContext (deployWarnings deploy);
        drv = pkgs.runCommand "rollout-check-deploy-schema" { inherit issues; warnings = concatStringsSep "\n" warnings; } ''
        if [ -n "$warnings" ]; then
          printf 'warning: %s\n' "$warnings" >&2
        fi
        if [ -n "$issues" ]; then
          echo "the deploy output is invalid:" >&2
          printf '%s\n' "$issues" >&2
          exit 1
        fi
        echo ok > "$out"
      '';
      in
      foldl' (d: w: builtins.trace "warning: ${w}" d) drv warnings;

    # This check does need the profiles: it looks inside each closure, so building it builds
    # every profile of every node. Entries whose shape is wrong are left to deploy-schema.
    deploy-activate =
      let
        nodes = if isAttrs (deploy.nodes or null) then deploy.nodes else { };
        profilesOf = n:
          let ps = nodes.${n}.profiles or null; in
          if isAttrs nodes.${n} && isAttrs ps then
            concatMap
              (p:
                let path = ps.${p}.path or null; in
                if isString path || (isAttrs path && path ? outPath) then
                  [ { name = "${n}.${p}"; path = "${path}"; } ]
                else [ ])
              (attrNames ps)
          else [ ];
        entries = concatMap profilesOf (attrNames nodes);
      in
      pkgs.runCommand "rollout-check-deploy-activate" { } ''
        failed=0
        check() {
          if [ ! -e "$2/deploy-rs-activate" ]; then
            echo "#$1 is missing deploy-rs-activate (build the profile with lib.<system>.activate.*): $2" >&2
            failed=1
          elif [ ! -f "$2/deploy-rs-activate" ] || [ ! -x "$2/deploy-rs-activate" ]; then
            echo "#$1 has a deploy-rs-activate that is not an executable file: $2" >&2
            failed=1
          fi
        }
        ${concatStringsSep "\n" (map (e: "check ${shellQuote e.name} ${shellQuote e.path}") entries)}
        if [ "$failed" != 0 ]; then exit 1; fi
        echo ok > "$out"
      '';
  };

in
{
  activate = { inherit custom nixos home-manager darwin noop; };

  setActivate = builtins.trace
    "warning: lib.setActivate is deprecated; use lib.activate.custom (or activate.nixos, activate.home-manager, activate.darwin, activate.noop)"
    custom;

  inherit deployChecks deployIssues deployWarnings;
}
