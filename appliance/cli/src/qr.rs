//! QR codes of client configs, for the mobile apps: in the terminal (Unicode half
//! blocks, two modules per character cell) or as a PNG.
//!
//! The error-correction level is the most robust one the config fits in: M (15 % of
//! the code may be damaged, the usual default) and, for long configs, L (7 %), as
//! `qrencode` uses. Past what a version-40 code holds at L the config is refused
//! with its size and the limit: such a config goes to the phone as a file.

use anyhow::{bail, Result};
use qrcode::types::QrError;
use qrcode::{Color, EcLevel, QrCode};

/// Quiet zone around the code, in modules (the QR standard asks for 4).
const QUIET: usize = 4;
/// PNG pixels per module.
const PNG_SCALE: usize = 8;

/// Error-correction levels tried, most robust first.
const LEVELS: [EcLevel; 2] = [EcLevel::M, EcLevel::L];

/// Bytes a QR code holds at most: version 40, level L, byte mode (ISO/IEC 18004
/// table 7).
pub const MAX_BYTES: usize = 2953;

fn code(text: &str) -> Result<QrCode> {
    for level in LEVELS {
        match QrCode::with_error_correction_level(text.as_bytes(), level) {
            Ok(code) => return Ok(code),
            Err(QrError::DataTooLong) => continue,
            Err(e) => bail!("making the QR code: {e}"),
        }
    }
    bail!(
        "the config is {} bytes, more than any QR code holds ({MAX_BYTES} bytes at the lowest \
         error correction): give it to the device as a file instead (--output FILE)",
        text.len()
    )
}

/// Columns the terminal code takes (modules plus the quiet zone on both sides).
pub fn terminal_width(text: &str) -> Result<usize> {
    Ok(code(text)?.width() + 2 * QUIET)
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

/// Colours of each line, as `qrencode -t ansiutf8` sets them: white blocks on
/// black, whatever the terminal's own theme, so the code always has the polarity
/// scanners expect (the mobile apps' scanners do not all read inverted codes).
const LINE_START: &str = "\x1b[40;97m";
const LINE_END: &str = "\x1b[0m";

/// The config as a QR code in the terminal.
pub fn terminal(text: &str) -> Result<String> {
    let (size, g) = grid(&code(text)?);
    let mut out = String::new();
    for y in (0..size).step_by(2) {
        out.push_str(LINE_START);
        for x in 0..size {
            let top = g[y * size + x];
            let bottom = y + 1 < size && g[(y + 1) * size + x];
            // Light modules are drawn in white, dark ones left black.
            out.push(match (!top, !bottom) {
                (true, true) => '█',
                (true, false) => '▀',
                (false, true) => '▄',
                (false, false) => ' ',
            });
        }
        out.push_str(LINE_END);
        out.push('\n');
    }
    Ok(out)
}

/// The config as a grayscale PNG file's bytes.
pub fn png(text: &str) -> Result<Vec<u8>> {
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
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_code_is_square_with_quiet_zone() {
        let t = terminal("[Interface]\nPrivateKey = x\n").unwrap();
        let lines: Vec<&str> = t
            .lines()
            .map(|l| {
                l.strip_prefix(LINE_START)
                    .and_then(|l| l.strip_suffix(LINE_END))
                    .expect("every line sets and resets its colours")
            })
            .collect();
        let width = lines[0].chars().count();
        assert_eq!(lines.len(), width.div_ceil(2));
        assert!(lines[0].chars().all(|c| c == '█'), "quiet zone is light");
    }

    /// The drawn code decodes to the modules it came from: every character cell
    /// holds the two modules above each other.
    #[test]
    fn terminal_cells_match_the_modules() {
        let text = "[Peer]\nEndpoint = vpn:1194\n";
        let (size, g) = grid(&code(text).unwrap());
        let t = terminal(text).unwrap();
        for (row, line) in t.lines().enumerate() {
            let cells = line
                .strip_prefix(LINE_START)
                .and_then(|l| l.strip_suffix(LINE_END))
                .unwrap();
            for (x, c) in cells.chars().enumerate() {
                let (y0, y1) = (2 * row, 2 * row + 1);
                let light_top = !g[y0 * size + x];
                // Past the last row is quiet zone: light.
                let light_bottom = y1 >= size || !g[y1 * size + x];
                let want = match (light_top, light_bottom) {
                    (true, true) => '█',
                    (true, false) => '▀',
                    (false, true) => '▄',
                    (false, false) => ' ',
                };
                assert_eq!(c, want, "cell ({x}, {row})");
            }
        }
    }

    /// Read a QR code back out of a grey image, as a phone's scanner would.
    fn scan(width: usize, height: usize, pixel: impl Fn(usize, usize) -> u8) -> String {
        let mut img = rqrr::PreparedImage::prepare_from_greyscale(width, height, pixel);
        let grids = img.detect_grids();
        assert_eq!(grids.len(), 1, "one QR code in the image");
        grids[0].decode().expect("the QR code decodes").1
    }

    const CONFIG: &str = "[Interface]\nAddress = 10.0.0.250/32\n\
        PrivateKey = yAnz5TF+lXXJte14tji3zlMNq+hd2rYUIgJBgB3fBmk=\n\n[Peer]\n\
        PublicKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\n\
        PresharedKey = xTIBA5rboUvnH4htodjb6e697QjLERt1NAB4mZqp8Dg=\n\
        Endpoint = 198.51.100.7:1194\nAllowedIPs = 10.0.0.0/24, 192.168.50.0/24\n\
        PersistentKeepalive = 25\n";

    #[test]
    fn png_scans_back_to_the_config() {
        let bytes = png(CONFIG).unwrap();
        let decoder = ::png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(info.color_type, ::png::ColorType::Grayscale);
        let (w, h) = (info.width as usize, info.height as usize);
        assert_eq!(scan(w, h, |x, y| buf[y * w + x]), CONFIG);
    }

    #[test]
    fn terminal_code_scans_back_to_the_config() {
        // Render the characters as pixels: each cell is one module wide and two
        // high, upper and lower half; drawn (white) is light.
        let t = terminal(CONFIG).unwrap();
        let rows: Vec<Vec<char>> = t
            .lines()
            .map(|l| {
                l.strip_prefix(LINE_START)
                    .unwrap()
                    .strip_suffix(LINE_END)
                    .unwrap()
                    .chars()
                    .collect()
            })
            .collect();
        let (w, h) = (rows[0].len(), rows.len() * 2);
        const SCALE: usize = 4;
        let light = |x: usize, y: usize| match rows[y / 2][x] {
            '█' => true,
            '▀' => y.is_multiple_of(2),
            '▄' => y % 2 == 1,
            _ => false,
        };
        let text = scan(w * SCALE, h * SCALE, |x, y| {
            if light(x / SCALE, y / SCALE) {
                255
            } else {
                0
            }
        });
        assert_eq!(text, CONFIG);
    }

    /// A config too long for level M anywhere is coded at L and still scans; one
    /// past every QR code's capacity is an error naming its size and the limit.
    #[test]
    fn long_configs_fall_back_to_level_l_then_say_they_do_not_fit() {
        let long = |n: usize| {
            let routes: Vec<String> = (0..n)
                .map(|i| format!("10.{}.{}.0/24", i / 256, i % 256))
                .collect();
            format!("{CONFIG}AllowedIPs = {}\n", routes.join(", "))
        };
        // Between what version 40 holds at M (2331 bytes) and at L (2953).
        let text = long(170);
        assert!(
            text.len() > 2331 && text.len() <= MAX_BYTES,
            "{}",
            text.len()
        );
        let c = code(&text).unwrap();
        assert_eq!(c.error_correction_level(), EcLevel::L);
        let bytes = png(&text).unwrap();
        let decoder = ::png::Decoder::new(std::io::Cursor::new(bytes));
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size()];
        let info = reader.next_frame(&mut buf).unwrap();
        let (w, h) = (info.width as usize, info.height as usize);
        assert_eq!(scan(w, h, |x, y| buf[y * w + x]), text);
        // Short configs keep level M.
        assert_eq!(code(CONFIG).unwrap().error_correction_level(), EcLevel::M);

        let too_long = long(230);
        assert!(too_long.len() > MAX_BYTES);
        let e = terminal(&too_long).unwrap_err().to_string();
        assert!(
            e.contains(&format!("{} bytes", too_long.len()))
                && e.contains("2953")
                && e.contains("--output"),
            "{e}"
        );
    }

    #[test]
    fn png_has_the_signature_and_size() {
        let b = png("hello").unwrap();
        assert_eq!(&b[..8], b"\x89PNG\r\n\x1a\n");
        let w = u32::from_be_bytes(b[16..20].try_into().unwrap()) as usize;
        assert_eq!(w % PNG_SCALE, 0);
    }
}
