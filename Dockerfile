# streamtrack in a container: `docker build -t streamtrack .`, then see the README's
# "Docker" section for `docker run` lines (CPU, and GPUs through Vulkan). Without arguments
# the container runs the HTTP API (`serve`) on port 8080.

FROM rust:1.95-bookworm AS build
# nasm: openh264's assembly, built from its vendored source.
RUN apt-get update \
    && apt-get install -y --no-install-recommends nasm \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin streamtrack

FROM debian:bookworm-slim
# The Vulkan loader (wgpu finds GPU drivers through it) and Mesa's Vulkan drivers for AMD and
# Intel GPUs; NVIDIA's driver is mounted by the NVIDIA container toolkit at run time. The
# system's certificate authorities, which mqtts:// and https:// event sinks trust by default.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libvulkan1 mesa-vulkan-drivers ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 streamtrack
COPY --from=build /src/target/release/streamtrack /usr/local/bin/streamtrack
USER streamtrack
# The model cache and the GPU autotune cache: mount a volume here to keep them across
# containers. The server listens on every interface of the container.
ENV STREAMTRACK_CACHE=/home/streamtrack/.cache/streamtrack \
    STREAMTRACK_BIND=0.0.0.0:8080
WORKDIR /data
EXPOSE 8080
# Liveness through /healthz, which needs no token; bash's /dev/tcp, so the image needs no
# HTTP client. Only `serve` answers it: give `--no-healthcheck` to `docker run` for batch
# commands (`process`, `detect`).
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD bash -c 'exec 3<>/dev/tcp/127.0.0.1/${STREAMTRACK_BIND##*:} \
        && printf "GET /healthz HTTP/1.0\r\n\r\n" >&3 && head -n 1 <&3 | grep -q " 200 "'
ENTRYPOINT ["streamtrack"]
CMD ["serve"]
