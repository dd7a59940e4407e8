//! Reading made documents back in tests, the way a person's tools would.

/// The text of a PDF as pdftotext (Debian's poppler-utils) reads it; `None`, said plainly,
/// where pdftotext is not installed, which under `CI=true` is a failure.
pub fn pdf_text(pdf: &[u8]) -> Option<String> {
    use std::io::Write;
    let child = std::process::Command::new("pdftotext")
        .args(["-layout", "-", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) if std::env::var("CI").as_deref() == Ok("true") => panic!("pdftotext is needed under CI=true: {e}"),
        Err(e) => {
            eprintln!("SKIPPED the PDF text check: pdftotext (Debian package poppler-utils) is not installed: {e}");
            return None;
        }
    };
    if let Some(mut stdin) = child.stdin.take() {
        stdin.write_all(pdf).unwrap_or_else(|e| panic!("cannot give the PDF to pdftotext: {e}"));
    }
    let output = child.wait_with_output().unwrap_or_else(|e| panic!("pdftotext did not finish: {e}"));
    assert!(output.status.success(), "pdftotext could not read the PDF: {}", String::from_utf8_lossy(&output.stderr));
    Some(String::from_utf8_lossy(&output.stdout).into_owned())
}
