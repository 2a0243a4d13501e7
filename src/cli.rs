//! Command-line grammar. Flags follow docker's names so muscle memory carries over.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "kiln", version, about = "Build, store and move container images without a daemon")]
pub struct Cli {
    /// Store directory (default: /var/lib/kiln as root, $XDG_DATA_HOME/kiln otherwise)
    #[arg(long, global = true, env = "KILN_ROOT", value_name = "DIR")]
    pub root: Option<PathBuf>,

    /// A docker.io pull-through mirror (http(s)://host[:port]), tried before docker.io; may be
    /// repeated, and replaces the config file's registry-mirrors
    #[arg(long = "registry-mirror", global = true, value_name = "URL")]
    pub registry_mirrors: Vec<String>,

    /// No command: kiln prints its help, as docker does.
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Build an image from a Dockerfile
    Build(BuildArgs),
    /// Run a command in a new container
    Run(RunArgs),
    /// Create a new container (not started)
    Create(RunArgs),
    /// Start one or more stopped containers
    Start(StartArgs),
    /// Stop one or more running containers (their stop signal, then SIGKILL)
    Stop(StopArgs),
    /// Restart one or more containers
    Restart(StopArgs),
    /// Kill one or more running containers
    Kill(KillArgs),
    /// Block until one or more containers stop, then print their exit codes
    Wait(ContainersArgs),
    /// Fetch the logs of a container
    Logs(LogsArgs),
    /// Attach the terminal to a running container's output (and stdin, if made with -i)
    Attach(AttachArgs),
    /// Rename a container
    Rename(RenameArgs),
    /// Run a command in a running container
    Exec(ExecArgs),
    /// Display the running processes of a container
    Top(TopArgs),
    /// List containers
    Ps(PsArgs),
    /// Remove one or more containers
    Rm(RmArgs),
    /// The supervisor of a detached container (started by kiln itself)
    #[command(name = "__supervise", hide = true)]
    Supervise { id: String },
    /// Display a live stream of container(s) resource usage statistics
    Stats(StatsArgs),
    /// Pause all processes within one or more containers
    Pause(PauseArgs),
    /// Unpause all processes within one or more containers
    Unpause(PauseArgs),
    /// List port mappings or a specific mapping for the container
    Port(PortArgs),
    /// Import a rootfs tarball (plain, gzip or zstd) as a one-layer image
    Import(ImportArgs),
    /// Load images from a docker-archive or OCI archive (stdin by default)
    Load(LoadArgs),
    /// Save images to a docker-archive tarball (stdout by default)
    Save(SaveArgs),
    /// List images
    #[command(alias = "ls")]
    Images(ImagesArgs),
    /// Create a tag TARGET that refers to SOURCE
    Tag(TagArgs),
    /// Remove one or more images
    Rmi(RmiArgs),
    /// Show low-level information about images, as JSON
    Inspect(InspectArgs),
    /// Show the history of an image
    History(HistoryArgs),
    /// Download an image from a registry
    Pull(PullArgs),
    /// Upload an image to a registry
    Push(PushArgs),
    /// Log in to a registry
    Login(LoginArgs),
    /// Log out from a registry
    Logout(LogoutArgs),
    /// Search a registry for repositories
    Search(SearchArgs),
    /// Show the kiln version
    Version(VersionArgs),
    /// Run a command (default: $SHELL) in kiln's user namespace, as uid 0 with the user's
    /// subordinate ids, where a rootless store's files can be read and removed
    Unshare(UnshareArgs),
    /// Create a new image from a container's changes
    Commit(CommitArgs),
    /// Export a container's filesystem as a tar archive
    Export(ExportArgs),
    /// Inspect changes to files or directories on a container's filesystem
    Diff(DiffArgs),
    /// Copy files/folders between a container and the local filesystem
    Cp(CpArgs),
    /// Display system-wide information (store, storage, cgroups, network tool, registries)
    Info(InfoArgs),
    /// Manage images
    #[command(arg_required_else_help = true)]
    Image {
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Manage containers
    #[command(arg_required_else_help = true)]
    Container {
        #[command(subcommand)]
        command: ContainerCommand,
    },
    /// Manage volumes
    #[command(arg_required_else_help = true)]
    Volume {
        #[command(subcommand)]
        command: VolumeCommand,
    },
    /// Manage the build cache
    Builder {
        #[command(subcommand)]
        command: BuilderCommand,
    },
    /// Manage the store
    System {
        #[command(subcommand)]
        command: SystemCommand,
    },
}

/// `kiln image …`: docker's image group, with docker's aliases.
// Parsed once per run: boxing the big argument structs would only clutter the clap definitions.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum ImageCommand {
    /// Build an image from a Dockerfile
    Build(BuildArgs),
    /// Show the history of an image
    History(HistoryArgs),
    /// Import a rootfs tarball as a one-layer image
    Import(ImportArgs),
    /// Show low-level information about images, as JSON
    Inspect(InspectArgs),
    /// Load images from a docker-archive or OCI archive
    Load(LoadArgs),
    /// List images
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Remove unused images
    Prune(PruneArgs),
    /// Download an image from a registry
    Pull(PullArgs),
    /// Upload an image to a registry
    Push(PushArgs),
    /// Remove one or more images
    #[command(aliases = ["rmi", "remove"])]
    Rm(RmiArgs),
    /// Save images to a docker-archive tarball
    Save(SaveArgs),
    /// Create a tag TARGET that refers to SOURCE
    Tag(TagArgs),
}

/// `kiln container …`: docker's container group, for the container commands kiln has.
// Parsed once per run: boxing the big argument structs would only clutter the clap definitions.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum ContainerCommand {
    /// Attach the terminal to a running container's output (and stdin, if made with -i)
    Attach(AttachArgs),
    /// Create a new image from a container's changes
    Commit(CommitArgs),
    /// Copy files/folders between a container and the local filesystem
    Cp(CpArgs),
    /// Create a new container (not started)
    Create(RunArgs),
    /// Inspect changes to files or directories on a container's filesystem
    Diff(DiffArgs),
    /// Run a command in a running container
    Exec(ExecArgs),
    /// Export a container's filesystem as a tar archive
    Export(ExportArgs),
    /// Show low-level information about containers, as JSON
    Inspect(InspectArgs),
    /// Display the running processes of a container
    Top(TopArgs),
    /// Kill one or more running containers
    Kill(KillArgs),
    /// Fetch the logs of a container
    Logs(LogsArgs),
    /// List containers
    #[command(aliases = ["ps", "list"])]
    Ls(PsArgs),
    /// Remove all stopped containers
    Prune(ContainerPruneArgs),
    /// Rename a container
    Rename(RenameArgs),
    /// Restart one or more containers
    Restart(StopArgs),
    /// Remove one or more containers
    #[command(alias = "remove")]
    Rm(RmArgs),
    /// Run a command in a new container
    Run(RunArgs),
    /// Start one or more stopped containers
    Start(StartArgs),
    /// Stop one or more running containers
    Stop(StopArgs),
    /// Block until one or more containers stop, then print their exit codes
    Wait(ContainersArgs),
    /// Display a live stream of container(s) resource usage statistics
    Stats(StatsArgs),
    /// Pause all processes within one or more containers
    Pause(PauseArgs),
    /// Unpause all processes within one or more containers
    Unpause(PauseArgs),
    /// List port mappings or a specific mapping for the container
    Port(PortArgs),
}

/// `kiln volume …`: docker's volume group.
#[derive(Subcommand, Debug)]
pub enum VolumeCommand {
    /// Create a volume
    Create(VolumeCreateArgs),
    /// Display detailed information on one or more volumes
    Inspect(VolumeInspectArgs),
    /// List volumes
    #[command(alias = "list")]
    Ls(VolumeLsArgs),
    /// Remove unused local volumes
    Prune(VolumePruneArgs),
    /// Remove one or more volumes
    #[command(alias = "remove")]
    Rm(VolumeRmArgs),
}

#[derive(Args, Debug)]
pub struct VolumeCreateArgs {
    /// Volume driver name (only local)
    #[arg(short = 'd', long, default_value = "local")]
    pub driver: String,
    /// Set metadata for a volume (KEY=VALUE)
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Set driver specific options (none supported)
    #[arg(short = 'o', long = "opt")]
    pub opts: Vec<String>,
    /// The volume's name (default: a random one)
    pub name: Option<String>,
}

#[derive(Args, Debug)]
pub struct VolumeInspectArgs {
    /// Format output using a Go template
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    #[arg(required = true)]
    pub volumes: Vec<String>,
}

#[derive(Args, Debug)]
pub struct VolumeLsArgs {
    /// Only display volume names
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Provide filter values (dangling=true|false, name=, label=, driver=)
    #[arg(short = 'f', long = "filter")]
    pub filters: Vec<String>,
    /// Format output: "table", "json", or a Go template such as '{{.Name}}'
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct VolumePruneArgs {
    /// Remove all unused volumes, not just anonymous ones
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Provide filter values (label=)
    #[arg(long = "filter")]
    pub filters: Vec<String>,
}

#[derive(Args, Debug)]
pub struct VolumeRmArgs {
    /// Do not fail on a volume that does not exist
    #[arg(short = 'f', long)]
    pub force: bool,
    #[arg(required = true)]
    pub volumes: Vec<String>,
}

#[derive(Args, Debug)]
pub struct VersionArgs {
    /// Format the output using a Go template, e.g. '{{.Client.Version}}'
    #[arg(short = 'f', long)]
    pub format: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum BuilderCommand {
    /// Remove build cache
    Prune(BuilderPruneArgs),
}

#[derive(Args, Debug)]
pub struct BuilderPruneArgs {
    /// Remove all build cache, including layers images still use and RUN cache mounts
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Only cache older than this: until=DURATION (e.g. 24h, 30m, 90s)
    #[arg(long = "filter")]
    pub filters: Vec<String>,
    /// Keep this much cache (e.g. 512MB, 2GB), removing the oldest first
    #[arg(long = "keep-storage")]
    pub keep_storage: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum SystemCommand {
    /// Show store disk usage
    Df,
    /// Check every blob against its digest, every image's closure and every unpacked layer
    Fsck(FsckArgs),
    /// Display system-wide information
    Info(InfoArgs),
}

#[derive(Args, Debug)]
pub struct InfoArgs {
    /// Format the output: "json", or a Go template such as '{{.Driver}}' or '{{json .RegistryConfig}}'
    #[arg(short = 'f', long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct FsckArgs {
    /// Fix what can be fixed: re-unpack damaged snapshots from their verified blobs, remove
    /// leftover temp files
    #[arg(long)]
    pub repair: bool,
    /// Also compare the content of every file of every snapshot with its layer
    #[arg(long)]
    pub full: bool,
}

#[derive(Args, Debug)]
pub struct BuildArgs {
    /// Build context: a directory, or - to read a tar (or a lone Dockerfile) from stdin
    pub context: String,
    /// Name and optionally a tag (name:tag); may be repeated
    #[arg(short = 't', long = "tag")]
    pub tags: Vec<String>,
    /// Name of the Dockerfile (default: CONTEXT/Dockerfile; - for stdin)
    #[arg(short = 'f', long = "file")]
    pub file: Option<String>,
    /// Set a build-time variable (KEY=VALUE, or KEY to take it from the environment)
    #[arg(long = "build-arg")]
    pub build_args: Vec<String>,
    /// Build this stage and stop
    #[arg(long)]
    pub target: Option<String>,
    /// Target platform (os/arch[/variant])
    #[arg(long)]
    pub platform: Option<String>,
    /// Set a label on the image (KEY=VALUE); may be repeated
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Print only the image ID
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Progress output
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: crate::progress::ProgressMode,
    /// Write the image ID to this file
    #[arg(long)]
    pub iidfile: Option<PathBuf>,
    /// Write build result metadata (JSON) to this file
    #[arg(long)]
    pub metadata_file: Option<PathBuf>,
    /// Do not use the build cache
    #[arg(long)]
    pub no_cache: bool,
    /// Import build cache before building: type=local,src=DIR or type=registry,ref=REF (or REF)
    #[arg(long = "cache-from")]
    pub cache_from: Vec<String>,
    /// Export the build cache after building: type=local,dest=DIR or type=registry,ref=REF[,mode=max]
    #[arg(long = "cache-to")]
    pub cache_to: Vec<String>,
    /// Do not use the build cache for these stages
    #[arg(long = "no-cache-filter", value_delimiter = ',')]
    pub no_cache_filter: Vec<String>,
    /// Base images: --pull (or --pull=always) pulls them every time, --pull=missing (the default)
    /// only when the store lacks them, --pull=never not at all
    #[arg(long, value_name = "POLICY", num_args = 0..=1, require_equals = true, default_missing_value = "always", default_value = "missing")]
    pub pull: String,
    /// Expose a secret to RUN --mount=type=secret: id=ID,src=FILE or id=ID,env=VAR
    #[arg(long = "secret")]
    pub secrets: Vec<String>,
    /// Network for RUN steps that do not set --network: default (a namespace of its own with
    /// outbound access only, as BuildKit's), host or none
    #[arg(long)]
    pub network: Option<String>,
    /// How RUN steps are isolated: rootful (namespaces and overlay; also `oci`), rootless (the
    /// same in a user namespace), chroot (no namespaces nor mounts: an unprivileged container);
    /// default: the best this host allows
    #[arg(long, env = "KILN_ISOLATION", value_name = "MODE")]
    pub isolation: Option<String>,
    /// Build twice in throwaway stores and report whether the image IDs match (and if not, the first difference)
    #[arg(long)]
    pub check_reproducible: bool,
    /// Clamp timestamps to this Unix time (default: --build-arg SOURCE_DATE_EPOCH, then
    /// $SOURCE_DATE_EPOCH)
    #[arg(long)]
    pub source_date_epoch: Option<i64>,
    /// Output destination: type=local,dest=DIR | type=tar,dest=FILE|- | type=docker,dest=FILE |
    /// type=oci,dest=FILE | type=image[,name=NAME][,push=true] | type=registry; DIR alone is
    /// type=local, - alone a tar on stdout; may be repeated
    #[arg(short = 'o', long = "output", value_name = "SPEC")]
    pub outputs: Vec<String>,
    /// Shorthand for --output=type=registry: name the image in the store and push every -t name
    #[arg(long)]
    pub push: bool,
    /// Shorthand for --output=type=docker: name the image in kiln's store (what a build without
    /// --output does; with --output it also names it there)
    #[arg(long)]
    pub load: bool,
    /// Attach an SPDX SBOM of each image (true, false; buildx's `--sbom`)
    #[arg(long, value_name = "true|false", num_args = 0..=1, default_missing_value = "true")]
    pub sbom: Option<String>,
    /// Attach SLSA v1 provenance (true = mode=min, mode=min, mode=max, false; buildx's `--provenance`)
    #[arg(long, value_name = "mode=min|max", num_args = 0..=1, default_missing_value = "mode=min")]
    pub provenance: Option<String>,
    /// Attestations as buildx spells them: type=sbom, type=provenance[,mode=min|max] (repeatable)
    #[arg(long = "attest", value_name = "type=…")]
    pub attest: Vec<String>,
    /// Run BuildKit's build checks on the Dockerfile and report them instead of building
    /// (shorthand for --call=check; exit status 1 when a check finds something)
    #[arg(long)]
    pub check: bool,
    /// What to do: build (the default), or check[,ignorestatus=true] (see --check)
    #[arg(long, value_name = "METHOD")]
    pub call: Option<String>,
}

#[derive(Args, Debug)]
// docker's `-h` is the host name: help is `--help` only.
#[command(disable_help_flag = true)]
pub struct RunArgs {
    /// Print help
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// Run the container in the background and print its ID
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Remove the container when it exits
    #[arg(long)]
    pub rm: bool,
    /// Restart policy when the container exits: no, on-failure[:max-retries], always, unless-stopped
    #[arg(long)]
    pub restart: Option<String>,
    /// Signal to stop the container (default: the image's STOPSIGNAL, else SIGTERM)
    #[arg(long)]
    pub stop_signal: Option<String>,
    /// Seconds to wait for the stop signal before SIGKILL (default 10)
    #[arg(long)]
    pub stop_timeout: Option<u32>,
    /// Log options of the json-file log: max-size=SIZE, max-file=N
    #[arg(long = "log-opt")]
    pub log_opts: Vec<String>,
    /// Name of the container
    #[arg(long)]
    pub name: Option<String>,
    /// Set an environment variable (KEY=VALUE, or KEY to take it from kiln's environment)
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Read environment variables from a file (KEY=VALUE lines)
    #[arg(long = "env-file")]
    pub env_files: Vec<PathBuf>,
    /// Bind mount a host path or mount a volume: /HOST:/CTR[:ro], NAME:/CTR[:ro], or /CTR (an anonymous volume)
    #[arg(short = 'v', long = "volume")]
    pub volumes: Vec<String>,
    /// Attach a filesystem mount: type=bind|volume|tmpfs,source=…,target=…[,readonly]
    #[arg(long = "mount")]
    pub mounts: Vec<String>,
    /// Mount a tmpfs directory: /CTR[:size=SIZE,…]
    #[arg(long = "tmpfs")]
    pub tmpfs: Vec<String>,
    /// Mount the container's root filesystem as read only
    #[arg(long)]
    pub read_only: bool,
    /// Add Linux capabilities (NET_ADMIN, CAP_NET_ADMIN, ALL)
    #[arg(long = "cap-add")]
    pub cap_add: Vec<String>,
    /// Drop Linux capabilities (CHOWN, CAP_CHOWN, ALL)
    #[arg(long = "cap-drop")]
    pub cap_drop: Vec<String>,
    /// Give extended privileges to this container (all capabilities, no seccomp filter, no masked paths)
    #[arg(long)]
    pub privileged: bool,
    /// Add a custom host-to-IP mapping (host:ip; host-gateway for the host's address)
    #[arg(long = "add-host")]
    pub add_hosts: Vec<String>,
    /// Run an init inside the container (tini) that forwards signals and reaps processes
    #[arg(long)]
    pub init: bool,
    /// Set metadata on the container (KEY=VALUE)
    #[arg(short = 'l', long = "label")]
    pub labels: Vec<String>,
    /// Read in a line delimited file of labels
    #[arg(long = "label-file")]
    pub label_files: Vec<PathBuf>,
    /// Pull image before running: always, missing, never
    #[arg(long, default_value = "missing", value_parser = ["always", "missing", "never"])]
    pub pull: String,
    /// Command to run to check health
    #[arg(long)]
    pub health_cmd: Option<String>,
    /// Time between running the check (ms|s|m|h) (default 0s)
    #[arg(long)]
    pub health_interval: Option<String>,
    /// Consecutive failures needed to report unhealthy
    #[arg(long)]
    pub health_retries: Option<u32>,
    /// Maximum time to allow one check to run (ms|s|m|h) (default 0s)
    #[arg(long)]
    pub health_timeout: Option<String>,
    /// Start period for the container to initialize before starting health-retries countdown (ms|s|m|h) (default 0s)
    #[arg(long)]
    pub health_start_period: Option<String>,
    /// Disable any container-specified HEALTHCHECK
    #[arg(long)]
    pub no_healthcheck: bool,
    /// Working directory inside the container
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// User: name|uid[:group|gid]
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Overwrite the image's ENTRYPOINT
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Network: bridge (default: a namespace of its own with outbound access, through pasta or
    /// slirp4netns), host or none
    #[arg(long, default_value = "bridge")]
    pub network: String,
    /// Publish a container's port to the host: [IP:][HOST_PORT:]CONTAINER_PORT[/tcp|/udp] (no
    /// HOST_PORT: a free one)
    #[arg(short = 'p', long = "publish", value_name = "PORT")]
    pub publish: Vec<String>,
    /// Publish every port the image EXPOSEs, each on a free host port
    #[arg(short = 'P', long)]
    pub publish_all: bool,
    /// Keep stdin open
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Container host name (default: the short container ID)
    #[arg(short = 'h', long)]
    pub hostname: Option<String>,
    /// Security options: seccomp=unconfined (no filter) or seccomp=FILE (a docker seccomp profile); docker's default profile otherwise
    #[arg(long = "security-opt")]
    pub security_opts: Vec<String>,
    #[command(flatten)]
    pub resources: ResourceArgs,
    pub image: String,
    /// Command and arguments (override the image's CMD)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

/// `run`/`create`: resource limits, applied through the container's cgroup.
#[derive(Args, Debug, Default)]
pub struct ResourceArgs {
    /// Memory limit (a number with an optional unit b, k, m, g: 64m)
    #[arg(short = 'm', long, value_name = "BYTES", value_parser = crate::container::resources::parse_memory)]
    pub memory: Option<u64>,
    /// Number of CPUs (a decimal: 0.5)
    #[arg(long, value_name = "DECIMAL", value_parser = crate::container::resources::parse_cpus)]
    pub cpus: Option<u64>,
    /// Tune the container's pids limit (-1 for unlimited)
    #[arg(long, value_name = "N", allow_hyphen_values = true, value_parser = crate::container::resources::parse_pids_limit)]
    pub pids_limit: Option<i64>,
}

impl ResourceArgs {
    /// The limits, checked (docker's rules and this machine's cgroups).
    pub fn resources(&self) -> anyhow::Result<crate::container::resources::Resources> {
        crate::container::resources::Resources::from_flags(self.memory, self.cpus, self.pids_limit)
    }
}

#[derive(Args, Debug)]
pub struct PsArgs {
    /// Show all containers (default shows just running)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only show container IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Show the latest created container (includes all states)
    #[arg(short = 'l', long)]
    pub latest: bool,
    /// Show n last created containers (includes all states)
    #[arg(short = 'n', long, value_name = "N")]
    pub last: Option<usize>,
    /// Display total file sizes
    #[arg(short = 's', long)]
    pub size: bool,
    /// Filter output: status=, name=, id=, ancestor=, label=, exited=
    #[arg(short = 'f', long = "filter")]
    pub filters: Vec<String>,
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Format output: "table", "json", or a Go template such as '{{.ID}} {{.Names}}'
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct PortArgs {
    pub container: String,
    /// PRIVATE_PORT[/PROTO]
    pub private: Option<String>,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Show all containers (default shows just running)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Disable streaming stats and only pull the first result
    #[arg(long)]
    pub no_stream: bool,
    /// Do not truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Format output: "table", "json", or a Go template such as '{{.Name}} {{.CPUPerc}}'
    #[arg(long)]
    pub format: Option<String>,
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct PauseArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RmArgs {
    /// Force the removal of a running container (uses SIGKILL)
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Remove anonymous volumes associated with the container
    #[arg(short = 'v', long)]
    pub volumes: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StartArgs {
    /// Attach stdout/stderr and forward signals (one container)
    #[arg(short = 'a', long)]
    pub attach: bool,
    /// Attach the container's stdin
    #[arg(short = 'i', long)]
    pub interactive: bool,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct StopArgs {
    /// Seconds to wait before killing the container (default: its --stop-timeout, else 10)
    #[arg(short = 't', long = "time")]
    pub time: Option<i64>,
    /// Signal to send first (default: the container's stop signal)
    #[arg(short = 's', long)]
    pub signal: Option<String>,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct KillArgs {
    /// Signal to send
    #[arg(short = 's', long, default_value = "KILL")]
    pub signal: String,
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ContainersArgs {
    #[arg(required = true)]
    pub containers: Vec<String>,
}

#[derive(Args, Debug)]
pub struct LogsArgs {
    /// Follow log output
    #[arg(short = 'f', long)]
    pub follow: bool,
    /// Number of lines to show from the end of the logs ("all" for all)
    #[arg(short = 'n', long, default_value = "all")]
    pub tail: String,
    /// Show logs since a timestamp (2013-01-02T13:23:37Z) or relative (42m)
    #[arg(long)]
    pub since: Option<String>,
    /// Show logs before a timestamp or relative (42m)
    #[arg(long)]
    pub until: Option<String>,
    /// Show timestamps
    #[arg(short = 't', long)]
    pub timestamps: bool,
    /// Show extra details (accepted; kiln has no log attributes)
    #[arg(long)]
    pub details: bool,
    pub container: String,
}

#[derive(Args, Debug)]
pub struct AttachArgs {
    /// Do not attach stdin
    #[arg(long)]
    pub no_stdin: bool,
    /// Override the key sequence for detaching (default ctrl-p,ctrl-q)
    #[arg(long)]
    pub detach_keys: Option<String>,
    /// Proxy received signals to the process (accepted; with a tty, Ctrl-C reaches it through the terminal)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub sig_proxy: bool,
    pub container: String,
}

#[derive(Args, Debug)]
pub struct ExecArgs {
    /// Detached mode: run the command in the background
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Keep STDIN open
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-TTY
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Username or UID (format: <name|uid>[:<group|gid>]); default: the container's user
    #[arg(short = 'u', long)]
    pub user: Option<String>,
    /// Working directory inside the container (absolute; default: the container's)
    #[arg(short = 'w', long)]
    pub workdir: Option<String>,
    /// Set environment variables
    #[arg(short = 'e', long = "env")]
    pub env: Vec<String>,
    /// Read in a file of environment variables
    #[arg(long = "env-file")]
    pub env_files: Vec<PathBuf>,
    /// Give extended privileges (every capability) to the command
    #[arg(long)]
    pub privileged: bool,
    /// Override the key sequence for detaching (accepted; exec has nothing to detach from)
    #[arg(long)]
    pub detach_keys: Option<String>,
    pub container: String,
    /// The command and its arguments
    #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}

#[derive(Args, Debug)]
pub struct TopArgs {
    pub container: String,
    /// Options for ps (default: -ef)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

#[derive(Args, Debug)]
pub struct RenameArgs {
    pub container: String,
    pub new_name: String,
}

#[derive(Args, Debug)]
pub struct ContainerPruneArgs {
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Filter: until=DURATION|TIMESTAMP, label=KEY[=VALUE]
    #[arg(long = "filter")]
    pub filters: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Rootfs tarball: a file, an http:// or https:// URL, or - for stdin
    pub file: String,
    /// Reference to tag the image as
    pub reference: Option<String>,
    /// Apply a Dockerfile instruction to the image config (CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, USER, VOLUME, WORKDIR, STOPSIGNAL)
    #[arg(short = 'c', long = "change")]
    pub changes: Vec<String>,
    /// Commit message (history comment)
    #[arg(short = 'm', long)]
    pub message: Option<String>,
    /// Platform of the image (os/arch[/variant]); the host's by default
    #[arg(long)]
    pub platform: Option<String>,
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Read from a tar archive file instead of stdin; oci:DIR[:REF] reads an OCI image layout
    /// directory (all its images, or the one named REF)
    #[arg(short = 'i', long = "input")]
    pub input: Option<PathBuf>,
    /// Suppress the load output
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Check the whole archive against this sha256sum file (`save --checksum` writes ARCHIVE.sha256)
    #[arg(long, value_name = "FILE")]
    pub checksum: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct SaveArgs {
    /// Write to a file instead of stdout; oci:DIR[:REF] writes (or adds to) an OCI image layout
    /// directory, oci-archive:FILE and docker-archive:FILE choose the tar's format
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// Tar format: docker (docker-archive, also an OCI layout) or oci (OCI image layout only)
    #[arg(long, value_parser = ["docker", "oci"], default_value = "docker")]
    pub format: String,
    /// Leave out layers the far side holds: an image both sides have, an earlier bundle, an
    /// inventory (`save --inventory`) or a list of digests (`images --digests --no-trunc`); repeatable
    #[arg(long, value_name = "BASE")]
    pub since: Vec<String>,
    /// Write what this store holds (image IDs and layer digests) for the other side's --since
    #[arg(long, conflicts_with_all = ["since", "checksum", "compress"])]
    pub inventory: bool,
    /// Add SHA256SUMS (every member's sha256) and, with -o, FILE.sha256 (the whole file's)
    #[arg(long)]
    pub checksum: bool,
    /// Compress the whole archive (reproducible bytes; docker load reads gzip)
    #[arg(long, value_name = "gzip|zstd", value_parser = ["gzip", "zstd"])]
    pub compress: Option<String>,
    #[arg(required_unless_present = "inventory")]
    pub images: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ImagesArgs {
    /// Only images of this repository (and tag)
    pub reference: Option<String>,
    /// Show all images (including intermediate build images)
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only show image IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Show digests
    #[arg(long)]
    pub digests: bool,
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Filter output (dangling=true|false, reference=PATTERN, label=KEY[=VALUE], before=IMAGE, since=IMAGE)
    #[arg(short = 'f', long = "filter")]
    pub filters: Vec<String>,
    /// Format output: "table", "json", or a Go template such as '{{.Repository}}:{{.Tag}}' ("table …" adds headers)
    #[arg(long)]
    pub format: Option<String>,
}

#[derive(Args, Debug)]
pub struct TagArgs {
    pub source: String,
    pub target: String,
}

#[derive(Args, Debug)]
pub struct RmiArgs {
    /// Force removal of the image
    #[arg(short = 'f', long)]
    pub force: bool,
    #[arg(required = true)]
    pub images: Vec<String>,
}

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Format the output using a Go template, e.g. '{{.Id}}' or '{{index .Config.Labels "k"}}'
    #[arg(short = 'f', long)]
    pub format: Option<String>,
    /// Only this type of object: "container" or "image" (docker looks for a container first)
    #[arg(long = "type")]
    pub kind: Option<String>,
    /// Print the SBOM (SPDX JSON) attached to the image by `build --sbom`
    #[arg(long, conflicts_with_all = ["format", "provenance"])]
    pub sbom: bool,
    /// Print the SLSA provenance attached to the image by `build --provenance`
    #[arg(long, conflicts_with = "format")]
    pub provenance: bool,
    /// With --sbom/--provenance: only this platform's (os/arch[/variant])
    #[arg(long)]
    pub platform: Option<String>,
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Args, Debug)]
pub struct HistoryArgs {
    /// Don't truncate output
    #[arg(long)]
    pub no_trunc: bool,
    /// Only show image IDs
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Print sizes and dates in human readable format
    #[arg(short = 'H', long, default_value_t = true, action = clap::ArgAction::Set)]
    pub human: bool,
    /// Format output: "table", "json", or a Go template ("table …" adds headers)
    #[arg(long)]
    pub format: Option<String>,
    pub image: String,
}

#[derive(Args, Debug)]
pub struct PruneArgs {
    /// Remove all images not used by a container, not just dangling ones
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Do not prompt for confirmation
    #[arg(short = 'f', long)]
    pub force: bool,
}

#[derive(Args, Debug)]
pub struct PullArgs {
    /// Pull the image for this platform (os/arch[/variant]) instead of the host's
    #[arg(long)]
    pub platform: Option<String>,
    /// Pull every tag of the repository
    #[arg(short = 'a', long)]
    pub all_tags: bool,
    /// Pull every platform's image of a multi-platform image (and its attestations), kept as one
    #[arg(long, conflicts_with = "platform")]
    pub all_platforms: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Suppress the progress output
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Image reference: NAME[:TAG|@DIGEST]
    pub reference: String,
}

#[derive(Args, Debug)]
pub struct PushArgs {
    /// Layer compression: gzip (docker manifest) or zstd (OCI manifest)
    #[arg(long, default_value = "gzip", value_parser = ["gzip", "zstd"])]
    pub compression: String,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Suppress the progress output
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Image reference: NAME[:TAG]
    pub reference: String,
}

#[derive(Args, Debug)]
pub struct LoginArgs {
    /// User name
    #[arg(short = 'u', long)]
    pub username: Option<String>,
    /// Password (prefer --password-stdin)
    #[arg(short = 'p', long)]
    pub password: Option<String>,
    /// Read the password from stdin
    #[arg(long)]
    pub password_stdin: bool,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// Registry host[:port] (default: Docker Hub)
    pub registry: Option<String>,
}

#[derive(Args, Debug)]
pub struct LogoutArgs {
    /// Registry host[:port] (default: Docker Hub)
    pub registry: Option<String>,
}

#[derive(Args, Debug)]
pub struct SearchArgs {
    /// Show at most this many results
    #[arg(long, default_value_t = 25)]
    pub limit: usize,
    #[command(flatten)]
    pub tls: TlsArgs,
    /// [REGISTRY/]TERM: repositories whose name contains TERM (a registry's _catalog; Docker Hub's search API for docker.io)
    pub term: String,
}

/// How push, pull, login and search trust a registry.
#[derive(Args, Debug, Clone)]
pub struct TlsArgs {
    /// Verify the registry's TLS certificate (false: also allow plain HTTP, as for docker's insecure registries)
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub tls_verify: bool,
    /// Use the certificates in DIR (*.crt CAs, a *.cert + *.key client certificate) instead of
    /// /etc/containers/certs.d/REGISTRY and /etc/docker/certs.d/REGISTRY
    #[arg(long, value_name = "DIR")]
    pub cert_dir: Option<PathBuf>,
}

impl TlsArgs {
    /// The flags, plus the config file's registry mirrors and insecure registries.
    pub fn client_options(
        &self,
        credentials: Option<kiln_cas::registry::Credentials>,
    ) -> anyhow::Result<kiln_cas::registry::ClientOptions> {
        crate::config::client_options(kiln_cas::registry::ClientOptions {
            insecure: !self.tls_verify,
            credentials,
            cert_dir: self.cert_dir.clone(),
            ..Default::default()
        })
    }
}

#[derive(Args, Debug)]
pub struct CommitArgs {
    /// Container name or ID
    pub container: String,
    /// Repository and tag for the new image (REPO[:TAG])
    pub reference: Option<String>,
    /// Author (e.g., "John Hannibal Smith <hannibal@a-team.com>")
    #[arg(short = 'a', long)]
    pub author: Option<String>,
    /// Apply a Dockerfile instruction to the created image (CMD, ENTRYPOINT, ENV, EXPOSE, HEALTHCHECK, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME, WORKDIR)
    #[arg(short = 'c', long = "change")]
    pub changes: Vec<String>,
    /// Commit message
    #[arg(short = 'm', long)]
    pub message: Option<String>,
    /// Pause container during commit
    #[arg(short = 'p', long, default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true", require_equals = true)]
    pub pause: bool,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Container name or ID
    pub container: String,
    /// Write to a file, instead of STDOUT
    #[arg(short = 'o', long)]
    pub output: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct DiffArgs {
    /// Container name or ID
    pub container: String,
}

#[derive(Args, Debug)]
pub struct CpArgs {
    /// CONTAINER:SRC_PATH, a local path, or - (a tar stream on stdin)
    pub source: String,
    /// CONTAINER:DEST_PATH, a local path, or - (a tar stream on stdout)
    pub destination: String,
    /// Archive mode (copy all uid/gid information)
    #[arg(short = 'a', long)]
    pub archive: bool,
    /// Always follow symbol link in SRC_PATH
    #[arg(short = 'L', long = "follow-link")]
    pub follow_link: bool,
    /// Suppress progress output during copy
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

#[derive(Args, Debug)]
pub struct UnshareArgs {
    /// The command and its arguments
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}
