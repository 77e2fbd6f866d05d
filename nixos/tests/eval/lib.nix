# A small module-system evaluator and the part of nixpkgs' `lib` that our
# modules use, written for CI here, where neither nixpkgs nor its lib can
# be had (no registry serves them and nothing from outside may be
# committed). It follows nixpkgs' lib/modules.nix, lib/types.nix and
# lib/options.nix in the behaviour our modules rely on:
#
# - modules are attrsets, functions or paths, with `imports`, `options`
#   and `config` (or the shorthand: everything but imports is config);
#   functions get { config, options, lib, pkgs, modulesPath, name? } plus
#   specialArgs;
# - one option path declared twice is an error ("… is already declared
#   in …"), as in lib/modules.nix mergeOptionDecls for two declarations
#   that both carry a default or a type;
# - a definition of an undeclared option is an error ("The option `x'
#   does not exist"), unless the enclosing submodule has a freeformType;
# - mkIf, mkMerge and mkOverride (mkDefault = 1000, mkForce = 50, a plain
#   definition 100, an option's default 1500) are pushed down into
#   attrsets and discharged at each option exactly as dischargeProperties
#   and filterOverrides do: only the definitions with the lowest priority
#   number are merged;
# - types check each definition and merge them as nixpkgs' types do
#   (mergeEqualOption for scalars, concatenation for lists, per-name
#   merging for attrsOf, sub-evaluation for submodule, either/oneOf by
#   whichever type accepts every definition, nullOr, …);
# - `assertions` and `warnings` are plain options the caller checks.
#
# What it leaves out: mkOrder/mkBefore/mkAfter ordering, mkRenamedOption,
# disabledModules, option `apply` on submodules' freeform values, and the
# documentation machinery. docs/nixos.md says how it was cross-checked
# against the real lib.evalModules.
let
  inherit (builtins)
    all
    any
    attrNames
    concatLists
    concatMap
    concatStringsSep
    elem
    filter
    foldl'
    head
    isAttrs
    isBool
    isFloat
    isFunction
    isInt
    isList
    isPath
    isString
    length
    listToAttrs
    mapAttrs
    match
    tail
    toJSON
    typeOf
    ;

  showOption = loc: concatStringsSep "." loc;
  showFiles = files: concatStringsSep ", " (map (f: "`${toString f}'") files);
  showDefs = defs: concatStringsSep "\n" (map (d: "- In `${toString d.file}': ${toJSON' d.value}") defs);
  toJSON' = v: let r = builtins.tryEval (toJSON v); in if r.success then r.value else "<${typeOf v}>";

  # --- properties -------------------------------------------------------

  mkIf = condition: content: { _type = "if"; inherit condition content; };
  mkMerge = contents: { _type = "merge"; inherit contents; };
  mkOverride = priority: content: { _type = "override"; inherit priority content; };
  mkOptionDefault = mkOverride 1500;
  mkDefault = mkOverride 1000;
  mkImageMediaOverride = mkOverride 60;
  mkForce = mkOverride 50;
  mkVMOverride = mkOverride 10;
  defaultOverridePriority = 100;

  # Push mkIf/mkMerge/mkOverride on an attrset down into its attributes
  # (lib/modules.nix pushDownProperties): the result is a list of
  # attrsets whose values carry the properties.
  pushDownProperties =
    cfg:
    if cfg._type or "" == "merge" then
      concatMap pushDownProperties cfg.contents
    else if cfg._type or "" == "if" then
      map (mapAttrs (_: v: mkIf cfg.condition v)) (pushDownProperties cfg.content)
    else if cfg._type or "" == "override" then
      map (mapAttrs (_: v: mkOverride cfg.priority v)) (pushDownProperties cfg.content)
    else
      [ cfg ];

  # lib/modules.nix dischargeProperties: mkMerge flattens, mkIf keeps or
  # drops (its condition must be a bool).
  dischargeProperties =
    def:
    if def._type or "" == "merge" then
      concatMap dischargeProperties def.contents
    else if def._type or "" == "if" then
      if isBool def.condition then
        (if def.condition then dischargeProperties def.content else [ ])
      else
        throw "mkIf called with a non-Boolean condition"
    else
      [ def ];

  getPriority = def: if def.value._type or "" == "override" then def.value.priority else defaultOverridePriority;
  stripOverride = v: if v._type or "" == "override" then stripOverride v.content else v;

  # lib/modules.nix filterOverrides': keep the definitions with the
  # lowest priority number.
  filterOverrides =
    defs:
    let
      best = foldl' (p: d: let q = getPriority d; in if q < p then q else p) 9999 defs;
    in
    map (d: d // { value = stripOverride d.value; }) (filter (d: getPriority d == best) defs);

  # One option's definitions, discharged and filtered: what the type merges.
  effectiveDefs =
    defs:
    filterOverrides (
      concatMap (d: map (v: { inherit (d) file; value = v; }) (dischargeProperties d.value)) (
        # An override wrapping a merge or mkIf must keep its priority on
        # each of the pieces.
        concatMap (
          d:
          if d.value._type or "" == "override" then
            map (v: { inherit (d) file; value = mkOverride d.value.priority v; }) (dischargeProperties d.value.content)
          else
            [ d ]
        ) defs
      )
    );

  # --- types ------------------------------------------------------------

  mergeEqualOption =
    loc: defs:
    if defs == [ ] then
      throw "The option `${showOption loc}' has no definitions."
    else if all (d: d.value == (head defs).value) defs then
      (head defs).value
    else
      throw "The option `${showOption loc}' has conflicting definition values:\n${showDefs defs}";

  mergeOneOption =
    loc: defs:
    if length defs == 1 then
      (head defs).value
    else
      mergeEqualOption loc defs;

  # lib/options.nix mergeDefaultOption (types.unspecified).
  mergeDefaultOption =
    loc: defs:
    let
      list = map (d: d.value) defs;
    in
    if length list == 1 then
      head list
    else if all isFunction list then
      x: mergeDefaultOption loc (map (f: f x) list)
    else if all isList list then
      concatLists list
    else if all isAttrs list then
      foldl' (a: b: a // b) { } list
    else if all isBool list then
      any (x: x) list
    else if all isString list then
      concatStringsSep "" list
    else if all isInt list && all (x: x == head list) list then
      head list
    else
      throw "Cannot merge definitions of `${showOption loc}'. Definition values:\n${showDefs defs}";

  mkOptionType =
    {
      name,
      description ? name,
      check ? (_: true),
      merge ? mergeDefaultOption,
      getSubOptions ? (_: { }),
      nestedTypes ? { },
      ...
    }@args:
    {
      _type = "option-type";
      inherit
        name
        description
        check
        merge
        getSubOptions
        nestedTypes
        ;
    }
    // removeAttrs args [ "name" "description" "check" "merge" "getSubOptions" "nestedTypes" ];

  # Merge definitions with a type, checking each (lib/modules.nix
  # mergeDefinitions: "is not of type").
  mergeWithType =
    loc: type: defs:
    let
      bad = filter (d: !(type.check d.value)) defs;
    in
    if bad != [ ] then
      throw "A definition for option `${showOption loc}' is not of type `${type.description}'. Definition values:\n${showDefs bad}"
    else
      type.merge loc defs;

  # Defs of an element inside listOf/attrsOf: discharge properties, filter
  # priorities, merge; isDefined false when every definition was mkIf false.
  mergeDefinitions =
    loc: type: defs:
    let
      eff = effectiveDefs defs;
    in
    {
      isDefined = eff != [ ];
      mergedValue = mergeWithType loc type eff;
    };

  types = rec {
    inherit mkOptionType;
    raw = mkOptionType { name = "raw"; merge = mergeOneOption; };
    # lib/types.nix anything: attrsets merge per attribute, string-like
    # sets (packages) take one definition, functions merge their results,
    # everything else (lists too) must be equal.
    anything = mkOptionType {
      name = "anything";
      merge =
        loc: defs:
        let
          getType = v: if isAttrs v && v ? outPath then "stringCoercibleSet" else typeOf v;
          common = foldl' (t: d: if getType d.value == t then t else throw "The option `${showOption loc}' has conflicting option types in ${showFiles (map (d: d.file) defs)}") (getType (head defs).value) defs;
        in
        if common == "set" then
          (attrsOf anything).merge loc defs
        else if common == "stringCoercibleSet" then
          mergeOneOption loc defs
        else if common == "lambda" then
          x: anything.merge (loc ++ [ "<function body>" ]) (map (d: d // { value = d.value x; }) defs)
        else
          mergeEqualOption loc defs;
    };
    unspecified = mkOptionType { name = "unspecified"; };
    bool = mkOptionType { name = "bool"; description = "boolean"; check = isBool; merge = mergeEqualOption; };
    int = mkOptionType { name = "int"; description = "signed integer"; check = isInt; merge = mergeEqualOption; };
    float = mkOptionType { name = "float"; description = "floating point number"; check = isFloat; merge = mergeEqualOption; };
    number = either int float;
    intBetween = lo: hi: mkOptionType {
      name = "intBetween";
      description = "integer between ${toString lo} and ${toString hi} (both inclusive)";
      check = x: isInt x && x >= lo && x <= hi;
      merge = mergeEqualOption;
    };
    ints = {
      unsigned = mkOptionType { name = "unsignedInt"; description = "unsigned integer, meaning >=0"; check = x: isInt x && x >= 0; merge = mergeEqualOption; };
      positive = mkOptionType { name = "positiveInt"; description = "positive integer, meaning >0"; check = x: isInt x && x > 0; merge = mergeEqualOption; };
      u16 = intBetween 0 65535;
      between = intBetween;
    };
    port = ints.u16;
    str = mkOptionType { name = "str"; description = "string"; check = isString; merge = mergeEqualOption; };
    nonEmptyStr = mkOptionType { name = "nonEmptyStr"; description = "non-empty string"; check = x: isString x && match "[[:space:]]*" x == null; merge = mergeEqualOption; };
    singleLineStr = mkOptionType { name = "singleLineStr"; description = "(optionally newline-terminated) single-line string"; check = x: isString x && match "[^\n]*\n?" x != null; merge = mergeEqualOption; };
    strMatching = pattern: mkOptionType {
      name = "strMatching ${toJSON pattern}";
      description = "string matching the pattern ${pattern}";
      check = x: isString x && match pattern x != null;
      merge = mergeEqualOption;
    };
    separatedString = sep: mkOptionType {
      name = "separatedString";
      description = "strings concatenated with ${toJSON sep}";
      check = isString;
      merge = loc: defs: concatStringsSep sep (map (d: d.value) defs);
    };
    lines = separatedString "\n";
    commas = separatedString ",";
    envVar = separatedString ":";
    path = mkOptionType {
      name = "path";
      description = "path";
      check = x: isPath x || (isString x && builtins.substring 0 1 x == "/") || (isAttrs x && x ? outPath);
      merge = mergeEqualOption;
    };
    package = mkOptionType {
      name = "package";
      check = x: (isAttrs x && (x.type or "" == "derivation" || x ? outPath)) || isPath x || (isString x && builtins.substring 0 1 x == "/");
      merge = mergeOneOption;
    };
    attrs = mkOptionType {
      name = "attrs";
      description = "attribute set";
      check = isAttrs;
      merge = loc: defs: foldl' (a: d: a // d.value) { } defs;
    };
    enum = values: mkOptionType {
      name = "enum";
      description = "one of ${concatStringsSep ", " (map toJSON values)}";
      check = x: elem x values;
      merge = mergeEqualOption;
    };
    listOf = elemType: mkOptionType {
      name = "listOf";
      description = "list of ${elemType.description}";
      check = isList;
      merge =
        loc: defs:
        map (x: x.mergedValue) (
          filter (x: x.isDefined) (
            concatLists (
              builtins.genList (
                n:
                let
                  def = builtins.elemAt defs n;
                in
                builtins.genList (
                  m:
                  mergeDefinitions (loc ++ [ "[definition ${toString (n + 1)}-entry ${toString (m + 1)}]" ]) elemType [
                    { inherit (def) file; value = builtins.elemAt def.value m; }
                  ]
                ) (length def.value)
              ) (length defs)
            )
          )
        );
      getSubOptions = prefix: elemType.getSubOptions (prefix ++ [ "*" ]);
      nestedTypes.elemType = elemType;
    };
    nonEmptyListOf = elemType: let l = listOf elemType; in l // { check = x: l.check x && x != [ ]; };
    attrsOf = elemType: mkOptionType {
      name = "attrsOf";
      description = "attribute set of ${elemType.description}";
      check = isAttrs;
      merge =
        loc: defs:
        let
          # Each definition may itself be mkIf/mkMerge/mkOverride on an attrset.
          pieces = concatMap (d: map (v: { inherit (d) file; value = v; }) (pushDownProperties d.value)) defs;
          names = attrNames (foldl' (a: p: a // p.value) { } pieces);
          merged = map (
            n:
            let
              r = mergeDefinitions (loc ++ [ n ]) elemType (
                map (p: { inherit (p) file; value = p.value.${n}; }) (filter (p: p.value ? ${n}) pieces)
              );
            in
            { name = n; inherit r; }
          ) names;
        in
        listToAttrs (map (x: { inherit (x) name; value = x.r.mergedValue; }) (filter (x: x.r.isDefined) merged));
      getSubOptions = prefix: elemType.getSubOptions (prefix ++ [ "<name>" ]);
      nestedTypes.elemType = elemType;
    };
    lazyAttrsOf = attrsOf;
    nullOr = elemType: mkOptionType {
      name = "nullOr";
      description = "null or ${elemType.description}";
      check = x: x == null || elemType.check x;
      merge =
        loc: defs:
        let
          nulls = filter (d: d.value == null) defs;
        in
        if length nulls == length defs then
          null
        else if nulls != [ ] then
          throw "The option `${showOption loc}' is defined both null and not null, in ${showFiles (map (d: d.file) defs)}."
        else
          elemType.merge loc defs;
      getSubOptions = elemType.getSubOptions;
      nestedTypes.elemType = elemType;
    };
    either = t1: t2: mkOptionType {
      name = "either";
      description = "${t1.description} or ${t2.description}";
      check = x: t1.check x || t2.check x;
      merge =
        loc: defs:
        if all (d: t1.check d.value) defs then
          t1.merge loc defs
        else if all (d: t2.check d.value) defs then
          t2.merge loc defs
        else
          mergeOneOption loc defs;
      nestedTypes = { left = t1; right = t2; };
    };
    oneOf = ts: foldl' either (head ts) (tail ts);
    coercedTo = from: f: to: mkOptionType {
      name = "coercedTo";
      description = "${to.description} or ${from.description} convertible to it";
      check = x: (from.check x && to.check (f x)) || to.check x;
      merge = loc: defs: to.merge loc (map (d: d // { value = if from.check d.value && !(to.check d.value) then f d.value else d.value; }) defs);
    };
    addCheck = t: extra: t // { check = x: t.check x && extra x; };
    functionTo = elemType: mkOptionType {
      name = "functionTo";
      check = isFunction;
      merge = loc: defs: x: elemType.merge loc (map (d: d // { value = d.value x; }) defs);
    };
    # A list of modules, evaluated where the option's value is used
    # (lib/types.nix deferredModule).
    deferredModule = mkOptionType {
      name = "deferredModule";
      description = "module";
      check = x: isAttrs x || isFunction x || isPath x;
      merge = loc: defs: { imports = map (d: { _file = d.file; imports = [ d.value ]; }) defs; };
    };
    submoduleWith =
      {
        modules,
        specialArgs ? { },
        ...
      }:
      mkOptionType {
        name = "submodule";
        check = x: isAttrs x || isFunction x || isPath x;
        merge =
          loc: defs:
          (evalModules {
            inherit specialArgs;
            prefix = loc;
            name = if loc == [ ] then "" else builtins.elemAt loc (length loc - 1);
            modules = modules ++ map (d: { _file = d.file; config = d.value; }) defs;
          }).config;
        getSubOptions = prefix: (evalModules { inherit specialArgs prefix; name = "<name>"; inherit modules; }).options;
        inherit modules;
      };
    submodule = m: submoduleWith { modules = if isList m then m else [ m ]; };
  };

  mkOption = attrs: attrs // { _type = "option"; };
  mkEnableOption = name: mkOption {
    type = types.bool;
    default = false;
    example = true;
    description = "Whether to enable ${name}.";
  };
  mkPackageOption = _pkgs: name: extra: mkOption ({ type = types.package; } // removeAttrs extra [ "default" "example" "extraDescription" "pkgsText" ]);
  literalExpression = text: { _type = "literalExpression"; inherit text; };
  literalMD = text: { _type = "literalMD"; inherit text; };
  isOption = x: isAttrs x && x._type or "" == "option";

  # --- evaluation -------------------------------------------------------

  # Flatten a module and its imports into a list of
  # { file, options, config, freeform? } (lib/modules.nix collectModules).
  collectModules =
    args: file: m:
    let
      value =
        if isPath m || isString m then
          import m
        else
          m;
      thisFile = if isPath m || isString m then toString m else file;
      called = if isFunction value then value (args // { inherit (args) config; }) else value;
      f = called._file or thisFile;
      structured = called ? options || called ? config;
      imports = called.imports or [ ];
      body =
        if structured then
          {
            options = called.options or { };
            config = called.config or { };
            freeformType = called.freeformType or null;
          }
        else
          {
            options = { };
            config = removeAttrs called [ "imports" "_file" "key" "meta" "disabledModules" "freeformType" ];
            freeformType = called.freeformType or null;
          };
    in
    [ ({ file = f; } // body) ] ++ concatMap (collectModules args f) imports;

  # Merge the option trees of all modules; a leaf declared twice is an error.
  mergeDecls =
    loc: decls:
    let
      names = attrNames (foldl' (a: d: a // d.value) { } decls);
    in
    listToAttrs (
      map (
        n:
        let
          here = map (d: { inherit (d) file; value = d.value.${n}; }) (filter (d: d.value ? ${n}) decls);
          opts = filter (d: isOption d.value) here;
          trees = filter (d: !(isOption d.value)) here;
          loc' = loc ++ [ n ];
        in
        {
          name = n;
          value =
            if length opts > 1 then
              throw "The option `${showOption loc'}' in `${(builtins.elemAt opts 1).file}' is already declared in `${(head opts).file}'."
            else if opts != [ ] && trees != [ ] then
              throw "The option `${showOption loc'}' in `${(head opts).file}' is a prefix of options declared in `${(head trees).file}'."
            else if opts != [ ] then
              (head opts).value // { declarations = [ (head opts).file ]; loc = loc'; }
            else
              mergeDecls loc' trees;
        }
      ) names
    );

  # Evaluate the config tree under `loc` against the option tree `decls`,
  # from the definitions `defs` ({ file, value } at this level).
  evalTree =
    loc: decls: freeformType: defs:
    let
      pieces = concatMap (d: map (v: { inherit (d) file; value = v; }) (pushDownProperties d.value)) defs;
      bad = filter (p: !(isAttrs p.value) || p.value ? _type) pieces;
      defined = attrNames (foldl' (a: p: a // p.value) { } pieces);
      declared = attrNames decls;
      undeclared = filter (n: !(decls ? ${n})) defined;
      defsOf = n: map (p: { inherit (p) file; value = p.value.${n}; }) (filter (p: p.value ? ${n}) pieces);
      evalOpt =
        loc': opt: ds:
        let
          withDefault = ds ++ (if opt ? default then [ { file = "default of ${showOption loc'}"; value = mkOptionDefault opt.default; } ] else [ ]);
          eff = effectiveDefs withDefault;
          type = opt.type or types.unspecified;
          merged =
            if eff == [ ] then
              throw "The option `${showOption loc'}' was accessed but has no value defined. Try setting the option."
            else
              mergeWithType loc' type eff;
        in
        if opt ? apply then opt.apply merged else merged;
      freeform =
        if freeformType == null then
          { }
        else
          freeformType.merge loc (
            map (p: p // { value = removeAttrs p.value declared; }) pieces
          );
    in
    if bad != [ ] then
      throw "The option path `${showOption loc}' is an attribute set of options, but it is defined as a ${typeOf (head bad).value} in `${(head bad).file}'."
    else if freeformType == null && undeclared != [ ] then
      throw "The option `${showOption (loc ++ [ (head undeclared) ])}' does not exist. Definition values:\n${showDefs (defsOf (head undeclared))}"
    else
      freeform
      // mapAttrs (
        n: d:
        if isOption d then
          evalOpt (loc ++ [ n ]) d (defsOf n)
        else
          evalTree (loc ++ [ n ]) d null (defsOf n)
      ) decls;

  evalModules =
    {
      modules,
      specialArgs ? { },
      prefix ? [ ],
      name ? "",
    }:
    let
      args = specialArgs // {
        inherit lib config options name;
        pkgs = specialArgs.pkgs or { };
        modulesPath = specialArgs.modulesPath or "/no-modules-path";
      };
      collected = concatMap (collectModules args "<unknown-file>") modules;
      freeforms = filter (t: t != null) (map (c: c.freeformType) collected);
      options = mergeDecls prefix (map (c: { inherit (c) file; value = c.options; }) collected);
      config = evalTree prefix options (if freeforms == [ ] then null else head freeforms) (
        map (c: { inherit (c) file; value = c.config; }) collected
      );
    in
    {
      inherit config options;
      # Every declared option path with the file that declared it.
      declarations =
        let
          walk =
            tree:
            concatMap (
              n:
              let
                v = tree.${n};
              in
              if isOption v then [ { path = showOption v.loc; file = head v.declarations; } ] else walk v
            ) (attrNames tree);
        in
        walk options;
    };

  # --- lib functions our modules call ----------------------------------

  optional = cond: x: if cond then [ x ] else [ ];
  optionals = cond: xs: if cond then xs else [ ];
  optionalAttrs = cond: as: if cond then as else { };
  optionalString = cond: s: if cond then s else "";
  hasPrefix = pref: s: builtins.substring 0 (builtins.stringLength pref) s == pref;
  hasSuffix =
    suf: s:
    let
      ls = builtins.stringLength s;
      lf = builtins.stringLength suf;
    in
    ls >= lf && builtins.substring (ls - lf) lf s == suf;
  hasInfix =
    infix: s:
    let
      li = builtins.stringLength infix;
      ls = builtins.stringLength s;
    in
    li <= ls && any (i: builtins.substring i li s == infix) (builtins.genList (x: x) (ls - li + 1));
  # A literal separator as a regular expression.
  escapeRegex = builtins.replaceStrings (map (c: c) regexSpecial) (map (c: "\\" + c) regexSpecial);
  regexSpecial = [ "\\" "." "[" "]" "(" ")" "*" "+" "?" "^" "$" "|" "{" "}" ];
  splitString = sep: s: filter isString (builtins.split (escapeRegex sep) s);
  escapeShellArg = arg: let s = toString arg; in if match "[[:alnum:],._+:@%/-]+" s != null then s else "'${builtins.replaceStrings [ "'" ] [ "'\\''" ] s}'";
  escapeShellArgs = args: concatStringsSep " " (map escapeShellArg args);
  genAttrs = names: f: listToAttrs (map (n: { name = n; value = f n; }) names);
  mapAttrsToList = f: as: map (n: f n as.${n}) (attrNames as);
  filterAttrs = pred: as: listToAttrs (concatMap (n: if pred n as.${n} then [ { name = n; value = as.${n}; } ] else [ ]) (attrNames as));
  concatMapStringsSep = sep: f: xs: concatStringsSep sep (map f xs);
  concatMapStrings = f: xs: concatStringsSep "" (map f xs);
  makeBinPath = pkgs: concatStringsSep ":" (map (p: "${p}/bin") pkgs);
  recursiveUpdate =
    lhs: rhs:
    lhs
    // mapAttrs (n: v: if isAttrs v && isAttrs (lhs.${n} or null) && !(v ? _type) then recursiveUpdate lhs.${n} v else v) rhs;
  reverseList = xs: builtins.genList (i: builtins.elemAt xs (length xs - 1 - i)) (length xs);
  unique = foldl' (acc: e: if elem e acc then acc else acc ++ [ e ]) [ ];
  last = xs: builtins.elemAt xs (length xs - 1);
  getExe = p: "${p}/bin/${p.meta.mainProgram or p.pname or "unknown"}";
  getExe' = p: bin: "${p}/bin/${bin}";

  lib = {
    inherit
      mkIf
      mkMerge
      mkOverride
      mkDefault
      mkForce
      mkOptionDefault
      mkImageMediaOverride
      mkVMOverride
      mkOption
      mkEnableOption
      mkPackageOption
      mkOptionType
      literalExpression
      literalMD
      isOption
      types
      evalModules
      optional
      optionals
      optionalAttrs
      optionalString
      hasPrefix
      hasSuffix
      hasInfix
      splitString
      escapeShellArg
      escapeShellArgs
      genAttrs
      mapAttrsToList
      filterAttrs
      concatMapStringsSep
      concatMapStrings
      makeBinPath
      recursiveUpdate
      unique
      reverseList
      last
      getExe
      getExe'
      showOption
      mergeEqualOption
      mergeOneOption
      ;
    inherit (builtins)
      all
      any
      attrNames
      attrValues
      concatLists
      concatStringsSep
      elem
      elemAt
      filter
      foldl'
      hasAttr
      head
      isAttrs
      isBool
      isInt
      isList
      isString
      length
      listToAttrs
      mapAttrs
      replaceStrings
      tail
      toJSON
      ;
    concatMap = builtins.concatMap;
    boolToString = b: if b then "true" else "false";
    id = x: x;
    const = x: _: x;
    flatten = x: if isList x then concatMap (y: if isList y then lib.flatten y else [ y ]) x else [ x ];
    strings = { inherit hasPrefix hasSuffix; };
    attrsets = { inherit recursiveUpdate filterAttrs mapAttrsToList genAttrs; };
    modules = { inherit evalModules; };
    fakeHash = "sha256-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    isDerivation = x: isAttrs x && x.type or "" == "derivation";
  };
in
lib
