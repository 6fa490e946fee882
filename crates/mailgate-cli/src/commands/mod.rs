//! One module per subcommand.

pub mod demo;
pub mod init;
pub mod login;
pub mod logout;
pub mod queue;
pub mod relay;
pub mod rules;
pub mod send;
pub mod sendmail;
pub mod sim;
pub mod status;
pub mod test;
pub mod token;

use crate::{Command, Globals};

/// Runs a parsed subcommand.
pub fn run(command: Command, globals: &Globals) -> anyhow::Result<()> {
    match command {
        Command::Init(a) => init::run(a, globals),
        Command::Login(a) => login::run(a, globals),
        Command::Token(a) => token::run(a, globals),
        Command::Status(a) => status::run(a, globals),
        Command::Logout(a) => logout::run(a, globals),
        Command::Send(a) => send::run(a, globals),
        Command::Test(a) => test::run(a, globals),
        Command::Sendmail(a) => sendmail::run(a, globals),
        Command::Sim(a) => sim::run(a, globals),
        Command::Demo(a) => demo::run(a, globals),
        Command::Rules(a) => rules::run(a, globals),
        Command::Relay(a) => relay::run(a, globals),
        Command::Queue(a) => queue::run(a, globals),
    }
}
