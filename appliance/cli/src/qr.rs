//! QR codes of client configs, for the mobile apps: in the terminal (Unicode half
//! blocks, two modules per character cell) or as a PNG.

use anyhow::{Context, Result};
use qrcode::{Color, QrCode};
use std::path::Path;

/// Quiet zone around the code, in modules (the QR standard asks for 4).
const QUIET: usize = 4;
/// PNG pixels per module.
const PNG_SCALE: usize = 8;

fn code(text: &str) -> Result<QrCode> {
    QrCode::new(text.as_bytes()).context("the config is too long for a QR code")
}

/// Dark/light grid with the quiet zone.
fn grid(code: &QrCode) -> (usize, Vec<bool>) {
    let w = code.width();
    let colors = code.to_colors();
    let size = w + 2 * QUIET;
    let mut g = vec![false; size * size];
    for y in 0..w {
        for x in 0..w {
            g[(y + QUIET) * size + x + QUIET] = colors[y * w + x] == Color::Dark;
        }
    }
    (size, g)
}

/// The config as a QR code in the terminal (dark modules drawn light-on-dark
/// terminals read fine: scanners accept both).
pub fn terminal(text: &str) -> Result<String> {
    let (size, g) = grid(&code(text)?);
    let mut out = String::new();
    for y in (0..size).step_by(2) {
        for x in 0..size {
            let top = g[y * size + x];
            let bottom = y + 1 < size && g[(y + 1) * size + x];
            // Light modules are drawn, dark ones left blank: on a dark terminal the
            // code appears with the usual polarity.
            out.push(match (!top, !bottom) {
                (true, true) => '█',
                (true, false) => '▀',
                (false, true) => '▄',
                (false, false) => ' ',
            });
        }
        out.push('\n');
    }
    Ok(out)
}

/// The config as a grayscale PNG.
pub fn png(text: &str, path: &Path) -> Result<()> {
    let (size, g) = grid(&code(text)?);
    let px = size * PNG_SCALE;
    let mut data = vec![0u8; px * px];
    for y in 0..px {
        for x in 0..px {
            let dark = g[(y / PNG_SCALE) * size + x / PNG_SCALE];
            data[y * px + x] = if dark { 0 } else { 255 };
        }
    }
    let mut bytes = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut bytes, px as u32, px as u32);
        enc.set_color(png::ColorType::Grayscale);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header()?;
        w.write_image_data(&data)?;
    }
    crate::state::write_atomic(path, &bytes, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_code_is_square_with_quiet_zone() {
        let t = terminal("[Interface]\nPrivateKey = x\n").unwrap();
        let lines: Vec<&str> = t.lines().collect();
        let width = lines[0].chars().count();
        assert_eq!(lines.len(), width.div_ceil(2));
        assert!(lines[0].chars().all(|c| c == '█'), "quiet zone is light");
    }

    #[test]
    fn png_has_the_signature_and_size() {
        let p = std::env::temp_dir().join(format!("cp-qr-{}.png", std::process::id()));
        png("hello", &p).unwrap();
        let b = std::fs::read(&p).unwrap();
        assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n");
        let w = u32::from_be_bytes(b[16..20].try_into().unwrap()) as usize;
        assert_eq!(w % PNG_SCALE, 0);
        std::fs::remove_file(p).unwrap();
    }
}
