<#
.SYNOPSIS
Start whisper-mcp as a persistent container (Windows / PowerShell).

.DESCRIPTION
Runs, with the image built from the repository's Dockerfile (docker build -t whisper-mcp .):

  docker run -d --name NAME --restart unless-stopped -p PORT:8765
      -v VOLUME:/service-storage [-e WHISPER_MCP_TOKEN] [-e WHISPER_MCP_MODEL=MODEL] IMAGE

The token is handed to docker through the environment (-e WHISPER_MCP_TOKEN
without a value), so it never appears on a command line or in the -DryRun
output. Default: $env:WHISPER_MCP_TOKEN, if set.

Agents in other containers reach the service at http://host.docker.internal:PORT/mcp.

Exit codes: 0 started (or already running), 1 docker failed, 2 usage error.

.EXAMPLE
.\scripts\start_transcription_service.ps1 -Token (Get-Content .\token.txt) -Port 8765

.EXAMPLE
.\scripts\start_transcription_service.ps1 -Volume C:\whisper-storage -Model base -DryRun
#>
[CmdletBinding()]
param(
    [string]$Name = "whisper-mcp",
    [int]$Port = 8765,
    [string]$Volume = "whisper-mcp-storage",
    [string]$Token = $env:WHISPER_MCP_TOKEN,
    [string]$Image = "whisper-mcp:latest",
    [string]$Model = "",
    [string]$Bind = "",
    [switch]$Gpu,
    [switch]$Replace,
    [switch]$DryRun
)

$ErrorActionPreference = "Stop"
$prog = "start_transcription_service"

function Fail([string]$Message, [int]$Code) {
    [Console]::Error.WriteLine("${prog}: error: $Message")
    exit $Code
}

if ($Name -notmatch '^[A-Za-z0-9][A-Za-z0-9_.-]*$') { Fail "-Name '$Name' is not a valid container name" 2 }
if ($Port -lt 1 -or $Port -gt 65535) { Fail "-Port must be from 1 to 65535, got $Port" 2 }

# A host folder rather than a named volume: docker needs it absolute.
if ($Volume -match '[\\/:]' -or $Volume.StartsWith(".") -or $Volume.StartsWith("~")) {
    $Volume = $ExecutionContext.SessionState.Path.GetUnresolvedProviderPathFromPSPath($Volume)
    if (-not $DryRun) {
        New-Item -ItemType Directory -Force -Path $Volume | Out-Null
    }
}

$publish = "${Port}:8765"
if ($Bind) { $publish = "${Bind}:$publish" }

$dockerArgs = @("run", "-d", "--name", $Name, "--restart", "unless-stopped", "-p", $publish, "-v", "${Volume}:/service-storage")
if ($Token) {
    $env:WHISPER_MCP_TOKEN = $Token
    $dockerArgs += @("-e", "WHISPER_MCP_TOKEN")
}
if ($Model) { $dockerArgs += @("-e", "WHISPER_MCP_MODEL=$Model") }
if ($env:WHISPER_MCP_ALLOWED_HOSTS) { $dockerArgs += @("-e", "WHISPER_MCP_ALLOWED_HOSTS") }  # names clients reach it by, beyond localhost
if ($Gpu) { $dockerArgs += @("--gpus", "all") }
$dockerArgs += $Image

function Quote([string]$Arg) {
    if ($Arg -match '[\s"''`$]') { return "'" + ($Arg -replace "'", "''") + "'" }
    return $Arg
}

if ($DryRun) {
    Write-Output ((@("docker") + $dockerArgs | ForEach-Object { Quote $_ }) -join " ")
    if ($Token) { [Console]::Error.WriteLine("${prog}: note: the command reads the token from WHISPER_MCP_TOKEN in its environment.") }
    exit 0
}

if (-not $Token -and $Bind -ne "127.0.0.1" -and $Bind -ne "localhost") {
    [Console]::Error.WriteLine("${prog}: warning: no token (-Token or WHISPER_MCP_TOKEN): anyone who can reach port $Port can use the service.")
}

if (-not (Get-Command docker -ErrorAction SilentlyContinue)) { Fail "docker is not installed or not on PATH" 1 }

$ErrorActionPreference = "Continue"
docker container inspect $Name *> $null
if ($LASTEXITCODE -eq 0) {
    if ($Replace) {
        docker rm -f $Name | Out-Null
    }
    elseif ((docker container inspect -f "{{.State.Running}}" $Name) -eq "true") {
        [Console]::Error.WriteLine("${prog}: container '$Name' is already running (-Replace to recreate it).")
        exit 0
    }
    else {
        [Console]::Error.WriteLine("${prog}: starting the existing container '$Name' (-Replace to recreate it with new options).")
        docker start $Name | Out-Null
        if ($LASTEXITCODE -ne 0) { exit 1 }
        exit 0
    }
}

docker @dockerArgs
if ($LASTEXITCODE -ne 0) { Fail "docker run failed" 1 }
$hostName = if ($Bind) { $Bind } else { "127.0.0.1" }
[Console]::Error.WriteLine("${prog}: started '$Name' on port $Port; check it with: curl http://${hostName}:$Port/health")
