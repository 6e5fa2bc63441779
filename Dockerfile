# streamtrack in a container: `docker build -t streamtrack .`, then see the README's
# "Docker" section for `docker run` lines (CPU, and GPUs through Vulkan).

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
# Intel GPUs; NVIDIA's driver is mounted by the NVIDIA container toolkit at run time.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libvulkan1 mesa-vulkan-drivers \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 streamtrack
COPY --from=build /src/target/release/streamtrack /usr/local/bin/streamtrack
USER streamtrack
ENV STREAMTRACK_CACHE=/home/streamtrack/.cache/streamtrack
WORKDIR /data
ENTRYPOINT ["streamtrack"]
CMD ["--help"]
