#include "textflag.h"

// Prefix sum of the eight 16-bit lanes of X, with T as scratch.
#define PREFIX(X, T) \
	MOVO X, T; PSLLDQ $2, T; PADDW T, X; \
	MOVO X, T; PSLLDQ $4, T; PADDW T, X; \
	MOVO X, T; PSLLDQ $8, T; PADDW T, X

// func rollScan8(in, out *byte, n int, s1, s2 uint32) (k int, r1, r2 uint32, found bool)
TEXT ·rollScan8(SB), NOSPLIT, $32-49
	MOVQ in+0(FP), SI
	MOVQ out+8(FP), DI
	MOVQ n+16(FP), CX
	XORQ BX, BX
	PXOR X0, X0
	// X1, X2: s1 and s2 in every lane.
	MOVL s1+24(FP), AX
	MOVQ AX, X1
	PSHUFLW $0, X1, X1
	PSHUFD $0, X1, X1
	MOVL s2+28(FP), AX
	MOVQ AX, X2
	PSHUFLW $0, X2, X2
	PSHUFD $0, X2, X2
	// X3: 64*31 (the leaving byte's offset, times the window) in every lane.
	MOVQ $1984, AX
	MOVQ AX, X3
	PSHUFLW $0, X3, X3
	PSHUFD $0, X3, X3
	// X4: all ones, the split (low 16 bits of s2 all set).
	PCMPEQW X4, X4

loop:
	CMPQ CX, $8
	JLT done
	MOVQ (SI)(BX*1), X5
	PUNPCKLBW X0, X5
	MOVQ (DI)(BX*1), X6
	PUNPCKLBW X0, X6
	// s1 after each byte: s1 + prefix(in - out).
	MOVO X5, X7
	PSUBW X6, X7
	PREFIX(X7, X8)
	PADDW X1, X7
	// s2 after each byte: s2 + prefix(s1 - 64*out - 64*31).
	PSLLW $6, X6
	MOVO X7, X9
	PSUBW X6, X9
	PSUBW X3, X9
	PREFIX(X9, X8)
	PADDW X2, X9
	MOVO X9, X10
	PCMPEQW X4, X10
	PMOVMSKB X10, AX
	TESTL AX, AX
	JNZ split
	// The last lane's sums, in every lane, for the next eight bytes.
	PSHUFHW $0xFF, X7, X1
	PSHUFD $0xFF, X1, X1
	PSHUFHW $0xFF, X9, X2
	PSHUFD $0xFF, X2, X2
	ADDQ $8, BX
	SUBQ $8, CX
	JMP loop

split:
	// The first lane on a split: rolled through it.
	BSFL AX, AX
	SHRL $1, AX
	MOVOU X7, 0(SP)
	MOVOU X9, 16(SP)
	MOVWLZX 0(SP)(AX*2), DX
	MOVL DX, r1+40(FP)
	MOVWLZX 16(SP)(AX*2), DX
	MOVL DX, r2+44(FP)
	LEAQ 1(BX)(AX*1), BX
	MOVQ BX, k+32(FP)
	MOVB $1, found+48(FP)
	RET

done:
	MOVQ X1, AX
	ANDL $0xffff, AX
	MOVL AX, r1+40(FP)
	MOVQ X2, AX
	ANDL $0xffff, AX
	MOVL AX, r2+44(FP)
	MOVQ BX, k+32(FP)
	MOVB $0, found+48(FP)
	RET
