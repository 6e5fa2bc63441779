//! JPEG decoding: streamtrack's libjpeg-exact decoder against the `image` crate's (zune-jpeg,
//! SIMD) on the shared test images (810x1080 4:2:0 and 1280x720 4:2:0).

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use streamtrack::video::jpeg;

fn decoders(c: &mut Criterion) {
    let mut group = c.benchmark_group("jpeg decode");
    for name in ["bus", "zidane"] {
        let data = std::fs::read(format!("../shared/data/images/{name}.jpg"))
            .expect("shared test image present");
        group.bench_with_input(
            BenchmarkId::new("streamtrack exact", name),
            &data,
            |b, d| b.iter(|| jpeg::decode(d, u64::MAX).expect("decodes")),
        );
        group.bench_with_input(
            BenchmarkId::new("image (zune-jpeg)", name),
            &data,
            |b, d| {
                b.iter(|| {
                    image::load_from_memory_with_format(d, image::ImageFormat::Jpeg)
                        .expect("decodes")
                        .into_rgb8()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, decoders);
criterion_main!(benches);
