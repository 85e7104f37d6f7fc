mod tunnel;

fn main() {}
