// Small POSIX calls Swift cannot make directly (ioctl is variadic), and what must run before Swift starts.
#ifndef CHATBATCH_CTERMINAL_H
#define CHATBATCH_CTERMINAL_H

/// The columns of the terminal on `fd`, or 0 when it is not a terminal or does not say.
int cb_terminal_columns(int fd);

#endif
